"""Identifiers that point at one person's records, and the names people use online.

- ``ID_NUMBER``: account, customer, order, policy, ticket, member, reference, booking, case, claim,
  invoice, licence, passport and similar numbers. Next to such a word (in English, Spanish, French,
  German, Italian, Portuguese, Dutch and Chinese) any code with a digit counts; standing alone, only a
  code shaped like an id: letters and digits mixed, at least two digits, six or more characters, and
  none of the shapes that are no one's (version numbers, dates, times, sizes and units, hex colours,
  hashes, model and standard names such as ``x86_64``, ``utf-8``, ``H264``, ``COVID-19``).
- ``USERNAME``: the user name in a home directory or profile path (``C:\\Users\\marta\\...``,
  ``/home/jdoe42/...``, ``/Users/kim/...``), a handle after "username", "login", "user id", a social
  handle (``@jdoe``; not a code decorator, an e-mail or a chat keyword).
- ``APP_ID``: reverse-domain application ids (``com.marta.budgetapp``) outside the big vendors'
  namespaces, whose packages identify no one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .entities import Entity

_ID_WORDS = (
    # English
    r"account|acct|a/c|customer|client|order|policy|ticket|member(?:ship)?|reference|ref|booking|reservation|case|claim|"
    r"invoice|licen[cs]e|passport|student|employee|staff|patient|tracking|confirmation|transaction|txn|contract|"
    r"subscriber|subscription|loyalty|serial|badge|tax|vat|national\s+id|id\s+card|identity\s+card|social\s+insurance|"
    r"insurance|visa|permit|registration|application|request|incident|issue|parcel|shipment|waybill|receipt|"
    r"voucher|coupon|pnr|record\s+locator|routing|sort\s+code|frequent\s+flyer|loyalty|miles|driver'?s\s+licen[cs]e|"
    r"national\s+insurance|nhs|medicare|medicaid|health\s+insurance|allocataire|s[ée]curit[ée]\s+sociale|carte\s+vitale|"
    # Spanish, Portuguese
    r"cuenta|cliente|pedido|p[oó]liza|n[uú]mero\s+de\s+socio|referencia|reserva|expediente|pasaporte|dni|nie|nif|cif|"
    r"factura|ticket|conta|ap[oó]lice|passaporte|cpf|cnpj|fatura|protocolo|"
    # French
    r"compte|commande|police|dossier|r[ée]servation|billet|passeport|facture|num[ée]ro\s+client|"
    # German, Dutch
    r"konto|kunden(?:nummer|-nr\.?)|kundennr|bestell(?:ung|nummer|-nr\.?)|vertrag(?:snummer)?|versicherungs(?:nummer|schein)|"
    r"buchung(?:snummer)?|reisepass|aktenzeichen|mitglieds(?:nummer)?|rechnung(?:snummer)?|steuer-?id|"
    r"klantnummer|bestelling|polis|boeking|dossiernummer|factuur|"
    # Italian
    r"conto|ordine|polizza|prenotazione|pratica|passaporto|codice\s+fiscale|fattura"
)
_NUM_WORDS = r"(?:number|num|no|nr|nº|n°|#|id|code|ref|nummer|numéro|número|numero|nro)"
_CODE = r"[A-Za-z0-9][A-Za-z0-9#/_.:-]{2,38}[A-Za-z0-9]"
# a code, or a short letter prefix and digits ("GBR 533918207", "BA 71294460"), or spaced digit groups ("125 2461893047")
_VALUE = rf"(?:[A-Z]{{1,4}}[ ]\d[\d-]{{4,20}}\d|\d{{1,6}}(?:[ ]\d{{2,12}}){{1,6}}|{_CODE})"
_CTX = re.compile(rf"(?i)(?<![\w-])(?:{_ID_WORDS})(?:[ \t]*{_NUM_WORDS}\.?)?[ \t]*(?:is|was|es|est|ist|é|:|=|-|#|was:|is:)?[ \t]*"
                  rf"(?:#[ \t]?)?({_VALUE})(?![\w-])")
# a JSON or config key that names an id, with a value of six or more digits: "messagingSenderId": "884120937551"
_KEYED = re.compile(r"(?i)\b\w*(?:id|number|num|no)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([A-Za-z0-9:_-]*\d{6,}[A-Za-z0-9:_-]*)")
_CJK_CTX = re.compile(r"(?:账号|帐号|账户|订单号?|客户号|客户编号|保单号|身份证号?|护照号?|工号|学号|会员号|卡号|单号|编号)"
                      r"[：:\s]{0,3}([A-Za-z0-9-]{4,30})")
# a standalone code: letters and digits mixed, 6+ characters, optionally in groups joined by - / # .
_STANDALONE = re.compile(r"(?<![\w@./\\:#-])([A-Za-z0-9]{1,12}(?:[-#/][A-Za-z0-9#]{1,12}){0,4})(?![\w@/\\-]|\.\w)")
_NOT_ID = re.compile(
    r"(?i)^(?:v?\d+(?:\.\d+)+[a-z]*\d*|\d+(?:st|nd|rd|th)|\d+(?:[kmgt]i?b|bytes?|bps|hz|khz|mhz|ghz|px|pt|em|rem|dpi|fps|"
    r"mm|cm|km|kg|mg|ml|g|m|s|ms|ns|h|hrs?|mins?|secs?|am|pm|x|k|m|bn|p|i|d|w|y|yo|ft|in|lbs?|oz|mph|kph|kw|kwh|mah|v|w|"
    r"gb|tb|mb|kb)|x86_64|x86|x64|arm64|aarch64|amd64|i386|utf-?8|utf-?16|iso-?8859-?\d+|sha-?\d+|md5|h\.?26[45]|"
    r"mp[34]|ipv[46]|oauth2?|http[s2]?|covid-?19|sars-?cov-?2|[a-z]\d|\d[a-z]|[a-z]{1,3}-?\d{1,2}|"
    r"gpt-?\d.*|llama-?\d.*|qwen.*|ps[1-5]|win(?:dows)?-?\d+|py3\d*|es20\d\d|c\+\+\d\d|\d{1,2}[:h]\d{2}|"
    r"\d{4}-\d{2}-\d{2}|\d{1,2}[/-]\d{1,2}[/-]\d{2,4}|#?[0-9a-f]{3}|#?[0-9a-f]{6}|[0-9a-f]{7,64})$")


def _looks_like_id(v: str) -> bool:
    core = v.replace("-", "").replace("/", "").replace("#", "").replace(".", "")
    digits = sum(c.isdigit() for c in core)
    letters = sum(c.isalpha() for c in core)
    if len(core) < 6 or digits < 2 or _NOT_ID.match(v):
        return False
    if letters == 0:  # all digits: an id only with separators in id-like groups ("0193-22-1") and not a date
        return ("-" in v or "/" in v) and len(core) >= 7 and not re.fullmatch(r"\d{1,4}[-/]\d{1,2}[-/]\d{1,4}", v)
    if letters > 0 and v.isalpha():
        return False
    lower_word = re.fullmatch(r"[a-z]+\d{1,2}", v)  # "python3", "route53": names, not ids
    return lower_word is None


def ids(text: str) -> Iterator[Entity]:
    seen: set[tuple[int, int]] = set()
    for m in _CTX.finditer(text):
        v = m.group(1).rstrip(".:")
        if any(c.isdigit() for c in v) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{1,2}[:h]\d{2}", v):
            seen.add((m.start(1), m.start(1) + len(v)))
            yield Entity("ID_NUMBER", m.start(1), m.start(1) + len(v), v, 0.9, "context")
    for m in _KEYED.finditer(text):
        if (m.start(1), m.end(1)) not in seen and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", m.group(1)):
            seen.add((m.start(1), m.end(1)))
            yield Entity("ID_NUMBER", m.start(1), m.end(1), m.group(1), 0.8, "context")
    for m in _CJK_CTX.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            yield Entity("ID_NUMBER", m.start(1), m.end(1), m.group(1), 0.9, "context")
    for m in _STANDALONE.finditer(text):
        if (m.start(1), m.end(1)) not in seen and _looks_like_id(m.group(1)):
            yield Entity("ID_NUMBER", m.start(1), m.end(1), m.group(1), 0.6, "pattern")


# -- user names and handles -------------------------------------------------------------------------
_HOME = re.compile(r"(?i)(?:[A-Z]:\\(?:Users|Documents and Settings)\\|(?<![\w.])/(?:home|Users|u|export/home)/|"
                   r"\\\\[\w.-]{1,64}\\(?:home|users|profiles?)\\|~)([A-Za-z0-9][\w.$-]{1,63})(?=[\\/]|\s|$|[\"',;:)])")
_SYSTEM_USERS = frozenset({"public", "default", "all users", "default user", "shared", "root", "admin", "administrator",
                           "user", "username", "you", "your_name", "yourname", "me", "runner", "ubuntu", "ec2-user",
                           "vagrant", "guest", "appdata", "desktop", "documents", "downloads", "local", "bin"})
_LOGIN = re.compile(r"(?i)\b(?:user(?:[ _-]?name)?|login|user[ _-]?id|handle|screen[ _-]?name|nick(?:name)?|alias|gamer[ ]?tag|"
                    r"psn|xbox\s+live|steam\s+(?:name|id)|benutzername|usuario|usuário|utilisateur|nome\s+utente|"
                    r"repository|repo)\b[\"']?\s{0,3}(?:is|was|es|é|est|ist|=|:)?\s{0,3}[\"'`@]?"
                    r"([A-Za-z0-9][\w.-]{2,40}[A-Za-z0-9_])")
_HANDLE = re.compile(r"(?<![\w@.:/])@([A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?)(?![\w@]|\.\w|\()")
_NOT_HANDLE = frozenset({"here", "channel", "everyone", "all", "param", "return", "returns", "throws", "see", "since",
                         "deprecated", "override", "property", "staticmethod", "classmethod", "dataclass", "author",
                         "todo", "example", "type", "media", "import", "interface", "component", "input", "output",
                         "mixin", "include", "extend", "keyframes", "font", "supports", "tailwind", "apply", "click"})
_APP_ID = re.compile(r"(?<![\w.])((?:com|org|net|io|app|dev|me|co|de|fr|uk|nl|es|it|br|cn|jp|in)\.[a-z][a-z0-9_]{1,40}"
                     r"(?:\.[a-z][a-z0-9_]{1,40}){1,4})(?![\w.(])", re.I)
_VENDORS = re.compile(r"(?i)^(?:com\.(?:google|android|apple|microsoft|amazon|facebook|meta|samsung|sun|oracle|ibm|"
                      r"fasterxml|squareup|twitter|github)|org\.(?:apache|springframework|junit|eclipse|jetbrains|"
                      r"mozilla|w3c|xml|json|slf4j|hibernate|gradle|kotlin|jboss)|io\.(?:reactivex|grpc|netty|ktor)|"
                      r"android|java|javax|kotlin)\b")
_FILE_EXT = re.compile(r"(?i)\.(?:com|org|net|io|app|dev|me|co)$")


def handles(text: str) -> Iterator[Entity]:
    for m in _HOME.finditer(text):
        name = m.group(1)
        if name.lower() not in _SYSTEM_USERS and not name.startswith("$") and "%" not in name:
            yield Entity("USERNAME", m.start(1), m.end(1), name, 0.9, "context")
    for m in _LOGIN.finditer(text):
        name = m.group(1)
        if name.lower() not in _SYSTEM_USERS and name.lower() not in ("and", "the", "for", "with", "name", "was", "is"):
            yield Entity("USERNAME", m.start(1), m.end(1), name, 0.75, "context")
    for m in _HANDLE.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if text[line_start:m.start()].strip() == "" and text[m.end():m.end() + 1] in ("\n", "(", ""):
            continue  # a decorator on its own line
        if m.group(1).lower() not in _NOT_HANDLE and not m.group(1).isdigit():
            yield Entity("USERNAME", m.start(), m.end(), m.group(), 0.7, "pattern")
    for m in _APP_ID.finditer(text):
        v = m.group(1)
        if not _VENDORS.match(v) and not _FILE_EXT.search(v) and v.count(".") >= 2:
            yield Entity("APP_ID", m.start(1), m.end(1), v, 0.7, "pattern")
