"""Words the keyword search and the learned fusion both ignore (one list, so the two halves agree)."""

STOPWORDS = frozenset(["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "how", "i", "in",
                       "is", "it", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where",
                       "which", "who", "why", "will", "with", "you", "your", "do", "does", "did", "can"])
