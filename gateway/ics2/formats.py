"""Is this value well-formed? Shapes of LRN, MRN, EORI, customs office, dates and codes shared by ICS2 and phase 1."""

from __future__ import annotations

import re
from datetime import date, datetime

LRN = re.compile(r"^\S.{0,21}$")                                  # an..22, not blank
MRN = re.compile(r"^[0-9]{2}[A-Z]{2}[A-Z0-9]{13}[0-9]$")          # an18: YY, country, 13, check digit (ICS1 XSD)
MRN_LOOSE = re.compile(r"^[0-9]{2}[A-Z]{2}[A-Z0-9]{14}$")          # ICS2 MRNs may end in a letter
EORI = re.compile(r"^[A-Z]{2}[A-Za-z0-9]{1,15}$")                  # EORI / TIN: country prefix + up to 15
TIN = re.compile(r"^[A-Z]{2}[^\r\n]{1,15}$")                       # phase-1 TINType (2 capitals, 3..17)
OFFICE = re.compile(r"^[A-Z]{2}[A-Z0-9]{6}$")                      # customs office reference an8
COUNTRY = re.compile(r"^[A-Z]{2}$")
FLIGHT = re.compile(r"^[A-Z0-9]{1,3}[0-9]{1,4}[A-Z]?$")
IMO_ENI = re.compile(r"^[0-9]{7,8}$")
N12 = re.compile(r"^[0-9]{12}$")
ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# ISO 3166-1 alpha-2 (officially assigned codes) plus XI (Northern Ireland, EU customs use) and XU.
ISO_COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC
CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD
GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH
KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW
MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC
SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY
UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XI XU
""".split())

EU_COUNTRIES = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK XI".split())


def is_n12(v: str) -> bool:
    """R660: YYYYMMDDHHMM with a real calendar date, hour 00-23, minute 00-59."""
    if not N12.match(v):
        return False
    try:
        datetime.strptime(v, "%Y%m%d%H%M")
    except ValueError:
        return False
    return True


def is_iso_datetime(v: str) -> bool:
    """ICS2 date-time: ISO 8601 ``YYYY-MM-DDThh:mm[:ss][Z|±hh:mm]`` with real calendar values."""
    if not ISO_DATETIME.match(v):
        return False
    try:
        datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def is_iso_date(v: str) -> bool:
    if not ISO_DATE.match(v):
        return False
    try:
        date.fromisoformat(v)
    except ValueError:
        return False
    return True
