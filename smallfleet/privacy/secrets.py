"""Secrets in pasted code, config, logs and URLs: credentials that must never reach a remote model.

Three kinds of evidence, strongest first:
1. **Known formats**: key prefixes that cloud providers, payment processors, code hosts and chat
   platforms put on their tokens, JWTs, PEM private-key blocks. The shape alone is enough.
2. **Context**: the value after ``password=``, ``api_key:``, ``client_secret`` and their kin in code,
   config, headers and URL query strings, and the password in a connection string
   (``scheme://user:PASSWORD@host``). A password may be a plain word, so context alone decides, once
   values that are code (``os.environ[...]``, ``get_token()``) or placeholders (``<your key>``,
   ``${TOKEN}``, ``xxxx``) are left out.
3. **Entropy**: a long random-looking token assigned in code or config (``X = "8f3kQ..."``). Hashes
   (hex only), UUIDs and ordinary identifiers are left alone.

Every match is a ``SECRET``. Each pattern is bounded (no unbounded repetition over the text), so a
pasted megabyte costs linear time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from .entities import Entity

# -- 1. known formats ------------------------------------------------------------------------------
_KNOWN = re.compile("|".join((
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",  # GitHub
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\bxox[abposre]-[A-Za-z0-9-]{10,200}", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,200}",  # Slack
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,200}", r"\bwhsec_[A-Za-z0-9]{20,200}",  # Stripe
    r"\bAIza[0-9A-Za-z_-]{35}", r"\bGOCSPX-[A-Za-z0-9_-]{20,60}", r"\bya29\.[0-9A-Za-z_-]{20,400}",  # Google
    r"\bsk-ant-[a-z0-9]{2,10}-[A-Za-z0-9_-]{20,200}",  # Anthropic
    r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,200}",  # OpenAI
    r"\bhf_[A-Za-z0-9]{30,60}\b",  # Hugging Face
    r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b",  # Telegram bots
    r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}\b",  # Discord bots
    r"\bSG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{30,50}\b",  # SendGrid
    r"\b(?:SK|AC)[0-9a-f]{32}\b",  # Twilio
    r"\bnpm_[A-Za-z0-9]{36}\b", r"\bpypi-[A-Za-z0-9_-]{50,300}",  # package registries
    r"\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}\b",  # Shopify
    r"\b(?:1000|1001)\.[A-Za-z0-9]{20,40}\b",  # Zoho client ids and secrets
    r"\beyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,1000}",  # JWT
    r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]{16,12000}?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
)))

# -- 2. context ------------------------------------------------------------------------------------
_KEY_WORDS = (r"(?:api[_ -]?key|apikey|access[_ -]?key(?:[_ -]?id)?|secret[_ -]?access[_ -]?key|access[_ -]?token|"
              r"auth[_ -]?token|refresh[_ -]?token|id[_ -]?token|bearer[_ -]?token|token|secret|client[_ -]?secret|"
              r"client[_ -]?id|app[_ -]?secret|app[_ -]?key|consumer[_ -]?(?:key|secret)|password|passwd|pwd|pass|"
              r"passphrase|private[_ -]?key|secret[_ -]?key|signing[_ -]?key|webhook[_ -]?secret|account[_ -]?key|"
              r"sas[_ -]?token|session[_ -]?(?:id|token|key)|cookie|credentials?|license[_ -]?key)")
# the key may carry a prefix: "DB_PASSWORD", "stripe.secret", or glued on: "csrftoken", "storePassword", "apiKey"
_PREFIX = (r"(?:[A-Za-z0-9]{0,30}[_.-]|(?:csrf|xsrf|session|access|refresh|auth|api|bearer|store|key|db|admin|root|user|"
           r"app|client|master|private|public|mail|smtp|ftp|redis|mongo|pg|mysql))?")
# KEY = value / KEY: value / "KEY": "value" / KEY => value
_ASSIGN = re.compile(rf"(?i)(?<![A-Za-z0-9]){_PREFIX}{_KEY_WORDS}[\"']?\s{{0,3}}(?:=>|:=|=|:)\s{{0,3}}"
                     r"(?:[\"'`]([^\"'`\n]{4,300})[\"'`]|([^\s\"'`,;&)}\]]{4,300}))")
# gradle, nginx, Apache style: the key, a space, a quoted value ("storePassword \"...\"")
_SPACED = re.compile(rf"(?i)(?<![A-Za-z0-9]){_PREFIX}{_KEY_WORDS}[ \t]+[\"']([^\"'\n]{{4,300}})[\"']")
_QUERY = re.compile(r"(?i)[?&#](?:key|api_?key|token|access_token|id_token|refresh_token|secret|client_secret|client_id|"
                    r"sig|signature|password|pwd|auth|code|sas|sv|apikey)=([^&\s#\"'<>]{6,400})")
_CONN = re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@\"']{1,64}:([^\s@/\"']{3,200})@[^\s/\"']{2,200}", re.I)
_HEADER = re.compile(r"(?i)\b(?:authorization|proxy-authorization)\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)\s+"
                     r"([A-Za-z0-9._~+/=-]{8,2000})|\b(?:bearer)\s+([A-Za-z0-9._~+/-]{20,2000}=*)")
_CONN_KV = re.compile(r"(?i)\b(?:AccountKey|SharedAccessKey|Password|Pwd)=([^;\s\"']{4,300})")
# Not secrets: code that fetches one, placeholders, booleans, empty markers
_CODE = re.compile(r"[()\[\]{}$]|^[<{\[%]|^(?:os\.|process\.env|env\.|getenv|settings\.|config\.|self\.|this\.|secrets\.)", re.I)
_PLACEHOLDER = re.compile(r"(?i)^(?:<[^>]*>|x{3,}|\*{3,}|\.{3,}|-+|null|none|nil|true|false|undefined|changeme|"
                          r"password|secret|token|string|str|your[_ -].*|my[_ -].*|insert.*|enter.*|replace.*|example.*|"
                          r"redacted|hidden|dummy|test|placeholder|required|optional|xxx.*|\w*_here)$")
_PLACEHOLDER_WORDS = re.compile(r"(?i)^[A-Z0-9_]*(?:YOUR|KEY|TOKEN|SECRET|HERE|PLACEHOLDER)[A-Z0-9_]*$")

# -- 3. entropy ------------------------------------------------------------------------------------
_TOKEN_IN_CODE = re.compile(r"(?:=|:|=>)\s{0,3}[\"'`]([A-Za-z0-9+/_.=-]{20,400})[\"'`]")
_HEX = re.compile(r"^[0-9a-fA-F-]+$")


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _random_looking(v: str) -> bool:
    if _HEX.match(v) or ("/" in v.strip("/") and v.count("/") > 2):  # hashes, UUIDs; paths
        return False
    classes = sum((any(c.islower() for c in v), any(c.isupper() for c in v), any(c.isdigit() for c in v)))
    return classes >= 3 and entropy(v) >= 3.7


def _usable(v: str) -> bool:
    v = v.strip()
    if len(v) < 4 or _CODE.search(v) or _PLACEHOLDER.match(v) or _PLACEHOLDER_WORDS.match(v):
        return False
    return not (" " in v and not _random_looking(v.replace(" ", "")) and len(v.split()) > 3)  # a sentence, not a password


def secrets(text: str) -> Iterator[Entity]:
    for m in _KNOWN.finditer(text):
        yield Entity("SECRET", m.start(), m.end(), m.group(), 1.0, "pattern")
    for m in _CONN.finditer(text):
        if _usable(m.group(1)):
            yield Entity("SECRET", m.start(1), m.end(1), m.group(1), 0.95, "context")
    for pat, score in ((_HEADER, 0.95), (_QUERY, 0.95), (_CONN_KV, 0.9), (_ASSIGN, 0.9), (_SPACED, 0.85)):
        for m in pat.finditer(text):
            g = next(i for i in range(1, (pat.groups or 0) + 1) if m.group(i) is not None) if pat.groups else 0
            v = m.group(g)
            stripped = v.rstrip(".,;:!?")
            if _usable(stripped):
                s = m.start(g)
                yield Entity("SECRET", s, s + len(stripped), stripped, score, "context")
    for m in _TOKEN_IN_CODE.finditer(text):
        if _random_looking(m.group(1)):
            yield Entity("SECRET", m.start(1), m.end(1), m.group(1), 0.8, "pattern")
