"""Pattern recognizers with validation: each returns entities with a score; checksums and context
words raise it, shapes alone keep it low. No model, so they run on every text in microseconds."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

import phonenumbers

from .affiliations import affiliations
from .entities import Entity
from .gazetteer import cities
from .identifiers import handles, ids
from .secrets import secrets

Recognizer = Callable[[str], Iterator[Entity]]

_U = r"[^\W\d_]"  # a letter in any script
_CAP = rf"(?:[A-ZÀ-ÖØ-ÞĀ-ſΑ-ΩА-Я]{_U}*\.?|{_U}+\.?)"  # a word, any case (address continuation lines)
_CAPW = rf"(?-i:[A-ZÀ-ÖØ-ÞΑ-ΩА-Я]){_U}*\.?"  # a capitalised word, even inside a case-insensitive pattern


def _ents(kind: str, pattern: re.Pattern[str], text: str, score: float, group: int = 0,
          valid: Callable[[str], bool] | None = None, source: str = "pattern") -> Iterator[Entity]:
    for m in pattern.finditer(text):
        s, e = m.span(group)
        value = text[s:e]
        if s < e and (valid is None or valid(value)):
            yield Entity(kind, s, e, value, score, source)


# -- e-mail, URL, IP ---------------------------------------------------------------------------------
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,24}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()\[\]{}]+[^\s<>\"'()\[\]{}.,;:!?]", re.I)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{3,45}(?![\w:])")  # validated below


def _valid_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


_USERINFO = re.compile(r"://[^\s/@]{0,64}:$")  # "scheme://user:" before it: a password and a host, not an e-mail


def emails(text: str) -> Iterator[Entity]:
    for e in _ents("EMAIL_ADDRESS", _EMAIL, text, 1.0):
        if not _USERINFO.search(text, max(0, e.start - 80), e.start):
            yield e


# a host name without a scheme: "priyaraghu.design", "github.com/kwh-dev", "staging-api.fernbrook-tea.co.uk"
_BARE = re.compile(r"(?<![\w@./:-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,5}(?:com|net|org|io|dev|app|me|co|design|art|"
                   r"blog|page|site|xyz|info|tech|ai|studio|photo|photography|online|store|shop|email|link|uk|de|fr|es|it|"
                   r"nl|pt|br|au|ca|us|eu|ch|at|be|se|no|dk|fi|pl|cz|jp|cn|in|mx|ar|cl|nz|ie|internal|local|lan|corp|home)"
                   r"(?:/[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?])?)(?![\w-]|\.\w|@)", re.I)
# hosts everyone uses: no one's site unless a path names someone ("github.com/kwh-dev")
_PUBLIC_HOSTS = re.compile(r"(?i)^(?:(?:www|docs|api|en|m)\.)?(?:github|gitlab|bitbucket|google|youtube|microsoft|apple|amazon|"
                           r"facebook|instagram|twitter|x|linkedin|stackoverflow|wikipedia|python|pypi|npmjs|example|"
                           r"mozilla|w3|cloudflare|openai|anthropic|docker|kubernetes|readthedocs)\.(?:com|org|io|net|dev)$")


def urls(text: str) -> Iterator[Entity]:
    yield from _ents("URL", _URL, text, 0.9)
    for m in _BARE.finditer(text):
        v = m.group(1)
        if not _PUBLIC_HOSTS.match(v) and not re.fullmatch(r"[\d.]+", v):
            yield Entity("URL", m.start(1), m.end(1), v, 0.6, "pattern")


def ips(text: str) -> Iterator[Entity]:
    yield from _ents("IP_ADDRESS", _IPV4, text, 0.95, valid=_valid_ip)
    yield from _ents("IP_ADDRESS", _IPV6, text, 0.9, valid=_valid_ip)


# -- cards, IBAN, SSN, licence -------------------------------------------------------------------
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){11,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?\b")
_SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
_SSN_CTX = re.compile(r"\b(?:ssn|social security)\b[^\n\d]{0,30}(\d{9}|\d{3} \d{2} \d{4})\b", re.I)
_LICENSE = re.compile(r"\b(?:driver'?s?|driving)\s+licen[cs]e(?:\s+(?:number|no\.?|#))?\s*(?:is|:)?\s*([A-Z0-9][A-Z0-9-]{4,19})\b", re.I)


def luhn(digits: str) -> bool:
    d = [int(c) for c in digits if c.isdigit()]
    if not 12 <= len(d) <= 19:
        return False
    total = 0
    for i, x in enumerate(reversed(d)):
        if i % 2:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    v = value.replace(" ", "").upper()
    if not 15 <= len(v) <= 34:
        return False
    moved = v[4:] + v[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def cards(text: str) -> Iterator[Entity]:
    yield from _ents("CREDIT_CARD", _CARD, text, 1.0, valid=luhn)


def ibans(text: str) -> Iterator[Entity]:
    yield from _ents("IBAN_CODE", _IBAN, text, 1.0, valid=iban_ok)


def ssns(text: str) -> Iterator[Entity]:
    for m in _SSN.finditer(text):
        if _ssn_ok(*m.groups()):
            yield Entity("US_SSN", m.start(), m.end(), m.group(), 0.95, "pattern")  # 3-2-4 is no phone grouping
    for m in _SSN_CTX.finditer(text):
        yield Entity("US_SSN", m.start(1), m.end(1), m.group(1), 0.9, "context")


def licenses(text: str) -> Iterator[Entity]:
    for m in _LICENSE.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            yield Entity("US_DRIVER_LICENSE", m.start(1), m.end(1), m.group(1), 0.9, "context")


# -- phone numbers --------------------------------------------------------------------------------
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){0,4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])")
_PHONE_CTX = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|fax|desk|call|calling|number|reach|whatsapp|sms|answering)\b", re.I)
_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL", "AU", "IN", "BR")


# where a phone number could be: 5+ digits with the separators numbers are written with. libphonenumber's
# matcher runs only on these windows: over a whole number-dense text (a pasted log) it took half of the
# detector's time, 25 s for 200 kB
_PHONE_WINDOW = re.compile(r"[+(]?\d[\d ().\-/\u00a0]{3,30}\d(?:\s?(?:x|ext\.?)\s?\d{1,5})?", re.I)


def _phone_windows(text: str) -> Iterator[tuple[int, int]]:
    last_s, last_e = -1, -1
    for m in _PHONE_WINDOW.finditer(text):
        if sum(c.isdigit() for c in m.group()) < 5:
            continue
        s, e = max(0, m.start() - 4), min(len(text), m.end() + 4)  # the matcher looks at the characters around
        if s <= last_e:
            last_e = e
            continue
        if last_e >= 0:
            yield last_s, last_e
        last_s, last_e = s, e
    if last_e >= 0:
        yield last_s, last_e


def phones(text: str) -> Iterator[Entity]:
    seen: set[tuple[int, int]] = set()
    for ws, we in _phone_windows(text):
        window = text[ws:we]
        for region in _REGIONS:  # libphonenumber's matcher validates against real numbering plans
            for pm in phonenumbers.PhoneNumberMatcher(window, region, leniency=phonenumbers.Leniency.VALID):
                if (ws + pm.start, ws + pm.end) not in seen:
                    seen.add((ws + pm.start, ws + pm.end))
                    yield Entity("PHONE_NUMBER", ws + pm.start, ws + pm.end, pm.raw_string, 0.9, "pattern")
    for m in _PHONE.finditer(text):
        v = m.group()
        digits = sum(c.isdigit() for c in v)
        if not 7 <= digits <= 15 or (m.start(), m.end()) in seen:
            continue
        if re.fullmatch(r"\d+", v) and digits > 10:
            continue  # a bare run of digits is an id or a card, not a phone
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            continue  # ISO date
        ctx = text[max(0, m.start() - 40):m.start()]
        score = 0.75 if _PHONE_CTX.search(ctx) else (0.55 if re.search(r"[ .()+-]", v) else 0.3)
        yield Entity("PHONE_NUMBER", m.start(), m.end(), v, score, "pattern")


# -- dates, ages, titles, zip codes -------------------------------------------------------------
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DATE = re.compile(
    rf"\b(?:\d{{4}}-\d{{2}}-\d{{2}}(?:[ T]\d{{2}}:\d{{2}}(?::\d{{2}})?)?"
    rf"|\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\s+\d{{4}})\b", re.I)
_YEAR_CTX = re.compile(r"\b(?:in|since|of|from|until|born|year|founded|established|circa|by)\s+((?:19|20)\d{2})\b", re.I)
_AGE = re.compile(r"\b(\d{1,3})(?=[ -]years?[ -]old\b|\s*(?:yo|y/o)\b)"
                  r"|\b(?:aged?|turn(?:ed|s|ing)?|i'?ll turn|i am|i'm)\s+(\d{1,3})\b(?!\s*(?:%|dollars|\$|am|pm|:))"
                  r"|\b(\d{1,3})\s*(?:ans|años|anos|jahre|jahren|jaar|anni|歳|岁)\b"
                  r"|\b(?:cumple|cumplió|cumplirá|faz|fez|fará|fête ses|wird|compie|wordt)\s+(\d{1,3})\b", re.I)
_TITLE = re.compile(r"(?<!\w)(Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau)(?:\.|\b)(?=\s+\w)", re.I)
_ZIP_CTX = re.compile(r"\b(?:zip(?:\s*code)?|postal\s*code|post\s*code|postcode)\b\s*(?:is|:)?\s*([A-Z0-9]{2,5}(?:[ -][A-Z0-9]{2,4})?)\b", re.I)


_CJK_DATE = re.compile(r"\d{4}\s?年\s?\d{1,2}\s?月(?:\s?\d{1,2}\s?[日号])?")
_LABELLED_ADDRESS = re.compile(r"(?:现住址|住址|地址|户籍地址|通讯地址|家庭住址|收货地址|العنوان|Adresse du logement|Endereço|Dirección|Domicilio|"
                               r"Anschrift|Wohnadresse)[ \t]*[：:][ \t]*([^\n]{4,80})")


def dates(text: str) -> Iterator[Entity]:
    yield from _ents("DATE_TIME", _DATE, text, 0.85)
    yield from _ents("DATE_TIME", _CJK_DATE, text, 0.85)
    for m in _YEAR_CTX.finditer(text):
        yield Entity("DATE_TIME", m.start(1), m.end(1), m.group(1), 0.6, "context")


def ages(text: str) -> Iterator[Entity]:
    for m in _AGE.finditer(text):
        g = next(i for i in range(1, 5) if m.group(i))
        if 0 < int(m.group(g)) < 125:
            yield Entity("AGE", m.start(g), m.end(g), m.group(g), 0.8, "context")


def titles(text: str) -> Iterator[Entity]:
    for m in _TITLE.finditer(text):
        end = m.end() + 1 if text[m.end():m.end() + 1] == "." else m.end()
        yield Entity("TITLE", m.start(), end, text[m.start():end], 0.7, "pattern")


def zips(text: str) -> Iterator[Entity]:
    for m in _ZIP_CTX.finditer(text):
        if any(c.isdigit() for c in m.group(1)):
            yield Entity("ZIP_CODE", m.start(1), m.end(1), m.group(1), 0.85, "context")


# -- street addresses -------------------------------------------------------------------------------
# Street words standing alone ("Clarke Avenue", "Via Roma") and endings glued into compounds
# ("Koskikatu", "Friedhofstrasse", "Storgatan"); short English endings are never glued ("Card" is no road).
_STREET_WORDS = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|square|sq|terrace|parkway|pkwy"
    "|highway|hwy|circle|cir|trail|crescent|close|row|mews|alley|grove|gardens|hill|park|walk|green|rise|view"
    "|straße|strasse|str|gasse|weg|platz|allee|ring|damm|rue|chemin|allée|impasse|quai|via|viale|piazza|corso|largo"
    "|vicolo|calle|avenida|plaza|paseo|camino|carrera|rua|travessa|praça|estrada|ulica|ul|odos|οδός|λεωφόρος|πλατεία|улица"
    "|utca|út|tér|straat|laan|plein|gracht|kade|vej|gade|vei|gata|väg"
)
_GLUED = ("straße|strasse|gasse|weg|platz|allee|damm|katu|tie|kuja|polku|tori|gatan|vägen|gata|väg|vej|gade|veien"
          "|vei|straat|laan|plein|gracht|kade|utca|ulica")
_SUFFIX = rf"(?:(?<!\w)(?:{_STREET_WORDS})|{_U}{{2,}}(?:{_GLUED}))"
_UNIT = r"(?:apt|apartment|suite|ste|unit|flat|room|floor|fl|box|po box|p\.o\. box|psc|bldg|building)\.?\s*#?\s*\d+[A-Za-z]?"
# "1234 Some Words 56", "24 Clarke Avenue", "Via Roma 131", "Koskikatu 25", "Friedhofstrasse 33"
_STREET = re.compile(
    rf"(?<![\w.-])(?:\d{{1,6}}[A-Za-z]?,?[ \t]+(?:{_CAPW}[ \t]+){{0,4}}{_CAPW}(?:[ \t]+\d{{1,5}}[A-Za-z]?\.?)?"
    rf"|(?:{_CAPW}[ \t]+){{0,3}}{_SUFFIX}\.?[ \t]+\d{{1,5}}[A-Za-z]?\b"
    rf"|(?:{_CAPW}[ \t]+){{1,3}}{_U}+[ \t]+\d{{1,5}}[A-Za-z]?\b(?=[ \t]*(?:\n|,|$|{_UNIT}))"
    rf"|\d{{1,6}}[ \t]+(?:{_CAP}[ \t]+){{1,4}}\d{{1,5}}[A-Za-z]?\b(?!\s*(?:%|items?|units?|pcs|times|x\b)))", re.I)
_CORNER = re.compile(r"\b(?:the\s+)?corner\s+of\s+([^\n,.;]{3,60}?\s+and\s+[^\n,.;]{3,40}?)(?=[.,;\n]|$)", re.I)
# ", City, REGION 12345" on the street's own line
_SAME_LINE = re.compile(rf"(?:,[ \t]*(?:{_CAPW}|[A-Z]{{2,3}}|\d{{3,6}})(?:[ \t]+(?:{_CAPW}|[A-Z]{{2,3}}|\d{{3,6}}|\([A-Za-z]+\))){{0,3}}){{1,3}}")
_UNIT_RE = re.compile(rf"(?<!\w){_UNIT}\b", re.I)
_ADDR_CTX = re.compile(r"\b(?:address|lives?|living|located|live at|ship(?:ped)? to|send (?:it )?to|deliver(?:ed)? to|"
                       r"mail(?:ing)? to|is at|at the|moved to|reside[sd]?|billing|shipping|visit us)\b", re.I)
# A following line is part of the address when it is short and made of names, codes and numbers.
_ADDR_LINE = re.compile(rf"^[ \t>?*-]*((?:{_UNIT}|(?:{_CAP}|[A-Z]{{2,3}}|\d{{3,6}}(?:[ -]\d{{2,4}})?)"
                        rf"(?:[ ,]+(?:{_CAP}|[A-Z]{{2,3}}|\d{{3,6}}(?:[ -]\d{{2,4}})?)){{0,4}}))[ \t,]*$", re.M | re.I)


def _has_suffix(value: str) -> bool:
    return re.search(rf"{_SUFFIX}\b", value, re.I) is not None


_PROSE = re.compile(r"(?<!\w)(?:and|or|the|in|of|at|to|for|with|more|than|each|items?|per|from|by|is|are|was)(?!\w)", re.I)
# "line 5 column 22", "row 3 col 4": a position in a text or a table (parser errors quote these), not a house
_POSITION = re.compile(r"\b(?:line|row|col|column|char|character|offset|pos|position|page|para(?:graph)?|cell|byte)\s*$", re.I)
_UNIT_TAIL = re.compile(rf"[ \t,]+{_UNIT}\b", re.I)
_NEWLINE = re.compile(r"[ \t,]*\n")


def street_addresses(text: str) -> Iterator[Entity]:
    for m in _STREET.finditer(text):
        s, e = m.span()
        value = text[s:e]
        if value[0].isdigit() and len(value.split()) < 2:
            continue
        if _PROSE.search(value):
            continue  # "3 lamps and 2", "2019 and 300": counts in a sentence, not a house
        if _POSITION.search(text[max(0, s - 12):s]):
            continue
        ctx = _ADDR_CTX.search(text[max(0, s - 60):s]) is not None
        multiline = text[e:e + 1] == "\n" or text[max(0, s - 1):s] == "\n"
        both_numbers = bool(re.match(r"\d", value)) and bool(re.search(r"\d[A-Za-z]?\.?$", value))
        score = 0.5 + 0.25 * _has_suffix(value) + 0.2 * ctx + 0.1 * multiline + 0.15 * both_numbers
        if score < 0.6:
            continue
        pos = e
        tail = _UNIT_TAIL.match(text, pos)  # "…, Apt. 5" on the same line
        if tail:
            pos = tail.end()
        same = _SAME_LINE.match(text, pos)
        if same:
            pos = same.end()
        for _ in range(5):  # continuation lines: unit, city, region, country, postcode
            nl = _NEWLINE.match(text, pos)
            if not nl:
                break
            line_end = text.find("\n", nl.end())
            lm = _ADDR_LINE.match(text, nl.end(), len(text) if line_end < 0 else line_end)
            if not lm or len(lm.group(1)) > 40:
                break
            pos = lm.end(1)
        yield Entity("STREET_ADDRESS", s, pos, text[s:pos], min(score, 1.0), "pattern")
    for m in _UNIT_RE.finditer(text):
        yield Entity("STREET_ADDRESS", m.start(), m.end(), m.group(), 0.7, "pattern")
    for m in _CORNER.finditer(text):
        yield Entity("STREET_ADDRESS", m.start(1), m.end(1), m.group(1), 0.8, "context")
    for m in _LABELLED_ADDRESS.finditer(text):
        v = m.group(1).rstrip(" ,;")
        yield Entity("STREET_ADDRESS", m.start(1), m.start(1) + len(v), v, 0.8, "context")


# -- places ------------------------------------------------------------------------------------------
def _place_pattern() -> re.Pattern[str]:
    from importlib import resources

    raw = resources.files("smallfleet.privacy").joinpath("data/places.txt").read_text(encoding="utf-8")
    names = [ln.strip() for ln in raw.splitlines() if ln.strip() and not ln.startswith("#")]
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alt})(?!\w)", re.I)


_PLACES = _place_pattern()


def places(text: str) -> Iterator[Entity]:
    """Countries, capitals and US states (spaCy's small model misses many, e.g. "Cyprus", "TROMSØ")."""
    for m in _PLACES.finditer(text):
        v = m.group()
        if v[0].isupper():  # "chad" or "georgia" in lower case are rarely places in running text
            yield Entity("LOCATION", m.start(), m.end(), v, 0.7, "pattern")


# -- names from context -----------------------------------------------------------------------------
_NAMEW = rf"(?-i:[A-ZÀ-ÖØ-ÞĀ-ſΑ-ΩА-Я]){_U}+(?:[-'’](?-i:[A-ZÀ-ÖØ-ÞΑ-ΩА-Я]){_U}+)?\.?"  # "Okafor-Reyes", "O'Neil"
_GREETING = (r"my name is|i am|i'm|this is|name\s*:|dear|hi|hello|hey|thanks|regards|sincerely|cheers|from|signed|"
             r"contact|ask for|speak to|talk to|mr\.?|mrs\.?|ms\.?|miss|dr\.?|prof\.?|"
             # Spanish, Portuguese, French, German, Italian, Dutch salutations and self-introductions
             r"hola|querid[oa]|estimad[oa]|sr\.?|sra\.?|srta\.?|don|doña|me llamo|mi nombre es|soy|"
             r"olá|ola|prezad[oa]|car[oa]|meu nome é|chamo-me|eu sou|"
             r"bonjour|cher|chère|madame|monsieur|mme\.?|mlle\.?|je m'appelle|je suis|"
             r"hallo|liebe[rs]?|sehr geehrte[rs]?|herr|frau|ich heiße|ich bin|mein name ist|"
             r"ciao|gentile|egregio|mi chiamo|sono|beste|geachte|ik ben|mijn naam is")
_NAME_CTX = re.compile(
    rf"(?:\b(?:{_GREETING})[ \t,:]+)(?:(?:Mag|Dr|Ing|Prof|Dipl|Lic|Ma)\.[ \t]+)?({_NAMEW}(?:[ \t]+\(?{_NAMEW}\)?){{0,2}})", re.I)
_NAME_LINE = re.compile(rf"^[ \t>*-]*({_NAMEW}(?:[ \t]+(?:[A-Z]\.?|{_NAMEW})){{1,3}})[ \t]*$", re.M)
# relatives, friends and colleagues named in passing: "my sister Leni", "mi abuela Carmen", "ma fille Inès"
_KIN = (r"mother|mom|mum|father|dad|sister|brother|son|daughter|wife|husband|partner|girlfriend|boyfriend|fianc[ée]e?|"
        r"grandma|grandmother|granny|grandpa|grandfather|grandson|granddaughter|aunt|uncle|cousin|niece|nephew|"
        r"friend|best friend|boss|manager|colleague|coworker|co-worker|neighbou?r|landlord|landlady|roommate|flatmate|"
        r"teacher|doctor|kid|baby|"
        r"madre|mamá|padre|papá|hermana|hermano|hija|hijo|esposa|esposo|mujer|marido|novia|novio|abuela|abuelo|tía|tío|"
        r"prima|primo|amiga|amigo|jefa|jefe|vecina|vecino|"
        r"mãe|pai|irmã|irmão|filha|filho|avó|avô|namorada|namorado|chefe|"
        r"mère|père|sœur|soeur|frère|fille|fils|femme|mari|copine|copain|grand-mère|grand-père|tante|oncle|amie|ami|"
        r"mutter|vater|schwester|bruder|tochter|sohn|frau|mann|freundin|freund|oma|opa|tante|onkel|chefin|chef|"
        r"madre|sorella|fratello|figlia|figlio|moglie|marito|nonna|nonno|zia|zio")
_KIN_NAME = re.compile(rf"(?i)\b(?:my|our|mi|mis|mia|mio|ma|mon|mes|mein|meine|meinem|meiner|minha|meu|nossa|nosso|mijn|onze)"
                       rf"[ \t]+(?:(?:little|older|younger|big|late|best|old|new|pequeña|pequeño|petite|petit|kleine|kleiner)[ \t]+)?"
                       rf"(?:{_KIN})[ \t,]+({_NAMEW}(?:[ \t]+{_NAMEW})?)")
# form fields: "Surname: KARIMOVA", "Given names: DILNOZA", "Owner: Siobhan Keane", "Nome completo: ..."
_FORM_NAME = re.compile(
    r"(?im)^[ \t>*-]*(?:(?:full|legal|first|last|given|family|middle|maiden|sur|pre|nick)[ \t]*names?|names?|surnames?|"
    r"owner|applicant|co-applicant|tenant|guarantor|patient|guest|passenger|traveller|traveler|employee|student|"
    r"emergency contact|contact person|next of kin|spouse|account holder|cardholder|beneficiary|signed|signature|"
    r"nombre(?:s)?(?: completo)?|apellidos?|titular|nome(?: completo)?|sobrenome|nom(?: de famille)?|prénoms?|"
    r"vorname|nachname|name des|cognome|naam|achternaam|voornaam)[ \t]*(?:\(s\))?[ \t]*[:：][ \t]*"
    rf"({_NAMEW}(?:[ \t]+(?:[A-Z]\.?|{_NAMEW})){{0,3}})[ \t]*(?:,|\(|$)")
_ARABIC_NAME = re.compile(r"(?:اسمي|أنا|انا|أخي|أختي|أمي|أبي|صديقي|صديقتي|زوجي|زوجتي|ابني|ابنتي|السيد|السيدة|عزيزي|عزيزتي)"
                          r"[ \t]+((?!و)[\u0621-\u064a]{2,}(?:[ \t]+(?:ال|بن[ \t]|ابن[ \t]|عبد)[\u0621-\u064a]{2,}){0,2})")
_ARABIC_PLACE = re.compile(r"(?:أعيش في|اعيش في|أسكن في|اسكن في|من مدينة|في مدينة)[ \t]+([\u0621-\u064a]{2,}(?:[ \t]+[\u0621-\u064a]{2,})?)")
_CJK_NAME = re.compile(r"(?:姓名|名字是|名字叫|我叫|我是|联系人|紧急联系人|老板|经理|老师|同事|朋友|妈妈|爸爸|哥哥|姐姐|弟弟|妹妹|"
                       r"先生|女士|收件人|申请人|户主)[：:\s]{0,3}([\u4e00-\u9fff]{2,4}|[A-Z][a-z]+(?: [A-Z][a-z]+){1,2})")
_NOT_A_NAME = frozenset({"The", "This", "That", "Thanks", "Thank", "Please", "Hi", "Hello", "Dear", "Regards", "Sorry",
                         "Yes", "No", "Ok", "Okay", "Here", "There", "Best", "Kind", "All", "Team", "Sir", "Madam",
                         "Experience", "Education", "Summary", "Skills", "Profile", "Languages", "Idiomas", "Experiencia"})
_JOB_WORDS = re.compile(r"(?i)\b(?:senior|junior|lead|head|chief|analyst|engineer|developer|manager|designer|director|"
                        r"assistant|consultant|specialist|officer|intern|programmer|scientist|architect|technician|nurse|"
                        r"teacher|student|summary|experience|education|skills|profile|objective|references|contact|"
                        r"address|phone|email|dear|subject|re|fwd)\b")


def names(text: str) -> Iterator[Entity]:
    """Names that NER misses, found by where they stand: after "my name is", "Dear", "Hola", a title; after a
    relative ("my sister Leni"); in a form field ("Surname: KARIMOVA"); or a line that is nothing but two to
    four capitalised words (a signature, a résumé's header or an address label). Also Arabic and Chinese cues."""
    for pat, score in ((_NAME_CTX, 0.6), (_KIN_NAME, 0.7), (_FORM_NAME, 0.75)):
        for m in pat.finditer(text):
            v = m.group(1).rstrip(".")
            if v.split()[0] not in _NOT_A_NAME:
                yield Entity("PERSON", m.start(1), m.start(1) + len(v), v, score, "context")
    for m in _NAME_LINE.finditer(text):
        if m.group(1).split()[0] not in _NOT_A_NAME and not _JOB_WORDS.search(m.group(1)):
            yield Entity("PERSON", m.start(1), m.end(1), m.group(1), 0.55, "context")
    for m in _ARABIC_NAME.finditer(text):
        yield Entity("PERSON", m.start(1), m.end(1), m.group(1), 0.7, "context")
    for m in _ARABIC_PLACE.finditer(text):
        yield Entity("LOCATION", m.start(1), m.end(1), m.group(1), 0.7, "context")
    for m in _CJK_NAME.finditer(text):
        yield Entity("PERSON", m.start(1), m.end(1), m.group(1), 0.7, "context")


# Each recognizer with the types it finds; the detector runs those that find a type it was asked for.
RECOGNIZERS: tuple[tuple[frozenset[str], Recognizer], ...] = tuple((frozenset(kinds.split()), rec) for kinds, rec in (
    ("EMAIL_ADDRESS", emails), ("URL", urls), ("IP_ADDRESS", ips), ("CREDIT_CARD", cards), ("IBAN_CODE", ibans),
    ("US_SSN", ssns), ("US_DRIVER_LICENSE", licenses), ("PHONE_NUMBER", phones), ("DATE_TIME", dates), ("AGE", ages),
    ("TITLE", titles), ("ZIP_CODE", zips), ("STREET_ADDRESS", street_addresses), ("LOCATION", places),
    ("PERSON LOCATION", names), ("SECRET", secrets), ("ID_NUMBER", ids), ("USERNAME APP_ID", handles),
    ("ORGANIZATION LOCATION", affiliations), ("LOCATION", cities),
))
