"""Employers, schools, shops and towns found by the words around them, in several languages.

spaCy's small English model misses most organisations in real user text (résumés, mixed-language
chat) and every name outside English prose. Where someone says where they work, study, bank or live,
the words before the name say what it is: "worked at", "intern at", "graduated from", "my bank,",
"trabajo en", "je travaille chez", "ich arbeite bei", "住在". The name itself is the run of
capitalised words (or CJK characters) after the cue, cut at the first lower-case word that is not a
connector ("of", "de", "für", "&"). Résumé lines "Role at Company" and "Company — Role" count as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .entities import Entity

_W = r"[^\W\d_]"
_CAPWORD = r"(?-i:[A-ZÀÁÂÄÅÇÉÈÊËÍÎÏÑÓÔÖØÚÜŁŚŻ])[\w'’&.-]*"
_CONNECT = r"(?:of|for|and|the|de|del|la|las|los|da|do|dos|das|du|des|le|für|der|die|und|di|della|van|von|y|e|&|at)"
_NAME = rf"({_CAPWORD}(?:[ \t]+(?:{_CONNECT}[ \t]+)?{_CAPWORD}){{0,5}})"

_ORG_CUES = (
    r"work(?:s|ed|ing)?\s+(?:at|for|with)|employed\s+(?:at|by)|job\s+at|position\s+at|role\s+at|shift\s+at|"
    r"intern(?:ed|ing|ship)?\s+(?:at|with)|volunteer(?:ed|ing)?\s+(?:at|with)|joined|hired\s+by|"
    r"studied\s+at|study\s+at|studying\s+at|student\s+at|graduated\s+(?:from|at)|alumn(?:us|a|i)\s+of|degree\s+from|"
    r"enrolled\s+(?:at|in)|attend(?:s|ed|ing)?|teach(?:es)?\s+at|taught\s+at|"
    r"(?:my|our|his|her|their)\s+(?:bank|employer|company|school|university|college|gym|insurer|insurance|landlord|"
    r"agency|firm|club|team|clinic|hospital|pharmacy|church|store|shop|supermarket|daycare|kindergarten)\s*(?:,|is|was|:)?|"
    r"customer\s+(?:of|at)|account\s+(?:at|with)|member\s+(?:of|at)|"
    # Spanish, Portuguese, French, German, Italian, Dutch
    r"trabaj(?:o|é|aba|a)\s+(?:en|para)|estudi(?:o|é|aba)\s+en|me\s+gradué\s+(?:en|de)|"
    r"trabalh(?:o|ei|ava)\s+(?:na|no|em|para)|estud(?:o|ei|ava)\s+(?:na|no|em)|"
    r"travaill(?:e|é|ais)\s+(?:chez|à|pour)|étudi(?:e|é|ais)\s+à|diplômée?\s+de|"
    r"arbeite(?:te)?\s+(?:bei|für)|studiere?(?:te)?\s+(?:an\s+der|in|an)|"
    r"lavor(?:o|avo)\s+(?:a|da|presso|per)|studi(?:o|avo)\s+(?:a|al|alla|presso)|"
    r"werk(?:te)?\s+(?:bij|voor)|studeer(?:de)?\s+(?:aan|in)"
)
_ORG = re.compile(rf"(?i)(?<!\w)(?:{_ORG_CUES})[ \t]+(?:the[ \t]+)?{_NAME}")
_PLACE_CUES = (
    r"live[sd]?\s+in|living\s+in|moved\s+(?:to|from)|grew\s+up\s+in|born\s+in|based\s+in|near|visiting|"
    r"(?:i'?m|i\s+am|we'?re|we\s+are|originally|comes?|came|hails?)\s+from|"
    r"relocat(?:e|ed|ing)\s+to|commute\s+(?:to|from)|"
    r"vivo\s+en|viv(?:ía|o)\s+en|soy\s+de|nací\s+en|moro\s+em|sou\s+de|nasci\s+em|j'habite\s+(?:à|a)|je\s+vis\s+(?:à|a)|"
    r"je\s+suis\s+de|ich\s+wohne\s+in|ich\s+lebe\s+in|ich\s+komme\s+aus|abito\s+a|vivo\s+a|sono\s+di|ik\s+woon\s+in"
)
_PLACE = re.compile(rf"(?i)(?<!\w)(?:{_PLACE_CUES})[ \t]+(?:the[ \t]+)?{_NAME}")
# "Software Engineer at Northwind Automotive" / "Northwind Automotive — Software Engineer" on a résumé line
_ROLE = (r"(?:engineer|developer|manager|analyst|designer|intern|assistant|consultant|director|lead|scientist|"
         r"specialist|coordinator|officer|technician|nurse|teacher|lecturer|researcher|cashier|clerk|administrator|"
         r"associate|representative|agent|accountant|architect|editor|writer|barista|driver|owner|founder|head|"
         r"programmer|artist|animator|tester|qa|support|recruiter|advisor|adviser|tutor|"
         r"técnic[oa]|ingenier[oa]|desarrollador[a]?|analista|jef[ea]|gerente|diseñador[a]?|programador[a]?|"
         r"entwickler(?:in)?|ingenieur(?:in)?|berater(?:in)?|leiter(?:in)?|sachbearbeiter(?:in)?|praktikant(?:in)?|"
         r"ingénieure?|développeu(?:r|se)|chef|responsable|stagiaire|chargée?|estagiári[oa]|desenvolvedor[a]?|"
         r"engenheir[oa]|coordenador[a]?)")
_ROLE_AT = re.compile(rf"(?i)\b{_ROLE}s?\b[^\n,;]{{0,20}}?[ \t]+(?:at|@|with|chez|bei|en|na|no)[ \t]+{_NAME}")
_COMPANY_DASH = re.compile(rf"(?m)^[ \t>*•·-]*{_NAME}[ \t]+[—–|-][ \t]+(?=[^\n]{{0,40}}\b{_ROLE})", re.I)
_CJK_ORG = re.compile(r"([\u4e00-\u9fff]{2,12}(?:有限公司|公司|集团|银行|支行|分行|大学|学院|中学|小学|幼儿园|医院|研究所|事务所))"
                      r"|(?:在|于)([\u4e00-\u9fff]{2,8}科技)")
# "Tidepool Robotics", "Quillmark Software", "RIVERBEND VETERINARY CLINIC", "Talleres Ebro Mecánica S.L.", "Hotel Ribeira Douro"
_SUFFIXES = (r"inc\.?|ltd\.?|llc|gmbh|ag|s\.l\.|s\.a\.|sas|sarl|b\.v\.|n\.v\.|co\.|corp\.?|plc|group|games|software|"
             r"robotics|analytics|services|solutions|systems|technologies|labs|bank|savings|insurance|university|college|"
             r"school|academy|institute|hospital|clinic|apartments|hotel|café|cafe|restaurant|press|studios?|partners|"
             r"consulting|logistics|automotive|pharmacy|dental|veterinary|realty|properties|motors|airlines|media|foods|"
             r"bakery|fitness|credit union|car hire|rentals?|petrochemical|holdings|ventures|capital|agency|"
             r"gymnasium|gesamtschule|hochschule|universität|klinik|sparkasse|versicherung|"
             r"universidad|universidade|université|università|escola|colegio|clínica|banco")
_ORG_SUFFIX = re.compile(rf"(?<![\w-])((?:{_CAPWORD}[ \t]+){{1,4}}(?i:{_SUFFIXES})(?:[ \t]+(?:{_CAPWORD}))?)(?![\w-])")
_ORG_PREFIX = re.compile(rf"(?<![\w-])((?-i:Hotel|Banco|Banca|Universidad|Universidade|Université|Universität|Università|"
                         rf"University of|Colegio|Escola|École|école|Hospital|Clínica|Clinica|Restaurante|Supermercado|Grupo|"
                         rf"Talleres|Stadtwerke|Bäckerei|Boulangerie|Institut|Instituto|Clube|Club)[ \t]+(?:(?:de|do|da|du|des|la|le|der)[ \t]+)?"
                         rf"{_CAPWORD}(?:[ \t]+{_CAPWORD}){{0,3}})")
_CJK_LEAD = re.compile(r"(?:我们|我|他|她|你)?(?:在|于|是|去|到|从)")
_CJK_PLACE = re.compile(r"(?:住在|来自|生活在|搬到|出生在|出生于)([\u4e00-\u9fff]{2,6}?)(?=[，。,.\s的]|$|市|省|区|县)")
_NOT_NAMES = frozenset({"I", "A", "An", "The", "It", "My", "We", "He", "She", "They", "This", "That", "Home", "Work",
                        "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January",
                        "February", "March", "April", "May", "June", "July", "August", "September", "October",
                        "November", "December", "Today", "Tomorrow", "Yesterday", "There", "Here", "Python", "Java",
                        "Google", "Home Office", "Remote"})


def _clean(v: str) -> str:
    return v.rstrip(".,;:'’-& ")


def affiliations(text: str) -> Iterator[Entity]:
    for pat, kind, score in ((_ORG, "ORGANIZATION", 0.7), (_ROLE_AT, "ORGANIZATION", 0.7),
                             (_COMPANY_DASH, "ORGANIZATION", 0.65), (_PLACE, "LOCATION", 0.65)):
        for m in pat.finditer(text):
            v = _clean(m.group(1))
            if len(v) >= 2 and v not in _NOT_NAMES and not v.isdigit():
                yield Entity(kind, m.start(1), m.start(1) + len(v), v, score, "context")
    for pat in (_ORG_SUFFIX, _ORG_PREFIX):
        for m in pat.finditer(text):
            v = _clean(m.group(1))
            if v.split()[0] not in _NOT_NAMES and len(v) >= 4:
                yield Entity("ORGANIZATION", m.start(1), m.start(1) + len(v), v, 0.65, "pattern")
    for m in _CJK_ORG.finditer(text):
        g = 1 if m.group(1) else 2
        if text[m.end(g):m.end(g) + 1] in ("：", ":"):
            continue  # a form's label ("开户银行："), not a bank
        start = m.start(g)
        lead = _CJK_LEAD.match(text, start, m.end(g) - 2)  # "我在…公司": the name starts after the words before it
        if lead:
            start = lead.end()
        yield Entity("ORGANIZATION", start, m.end(g), text[start:m.end(g)], 0.75, "context")
    for m in _CJK_PLACE.finditer(text):
        yield Entity("LOCATION", m.start(1), m.end(1), m.group(1), 0.7, "context")
