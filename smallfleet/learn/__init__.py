"""The learning loop over captured traffic (S3–S6): cluster steps into tasks, replay them on cheaper
models, move a task down only with evidence, specialise the small model.

- :func:`cluster_traces` (S3) tasks by structure, then by the task text's embedding;
- :class:`Matcher` a request to its cluster on the request path (no model call).
"""

from .clusters import Cluster, cluster_traces, load_clusters, save_clusters
from .match import Matcher, term_vector

__all__ = ["Cluster", "Matcher", "cluster_traces", "load_clusters", "save_clusters", "term_vector"]
