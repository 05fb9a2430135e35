"""Generated ENS payloads (IE3F32-shaped XML) of a given size: 10 KB, 1 MB, 100 MB (low redundancy)."""

from __future__ import annotations

import random
from pathlib import Path

NS = "urn:wco:datamodel:eu:ics2:2"


def _item(i: int, rnd: random.Random) -> str:
    return (f"<goodsItem><goodsItemNumber>{i}</goodsItemNumber><commodity><descriptionOfGoods>"
            f"{rnd.randbytes(12).hex()} parts</descriptionOfGoods><harmonizedSystemSubHeadingCode>"
            f"{rnd.randrange(100000, 999999)}</harmonizedSystemSubHeadingCode></commodity><weight><grossMass>"
            f"{rnd.random() * 1000:.3f}</grossMass></weight><packaging><typeOfPackages>PK</typeOfPackages>"
            f"<numberOfPackages>{rnd.randrange(1, 99)}</numberOfPackages><shippingMarks>M{rnd.randrange(10**8)}"
            f"</shippingMarks></packaging></goodsItem>\n")


def _head(lrn: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<IE3F32 xmlns="{NS}">\n'
            f"<documentIssueDate>2026-11-24T09:30:00Z</documentIssueDate>"
            f"<specificCircumstanceIndicator>F32</specificCircumstanceIndicator><LRN>{lrn}</LRN>\n"
            "<declarant><identificationNumber>NL123456789</identificationNumber><name>Holland Forwarding B.V.</name>"
            "<address><street>Havenweg</street><number>12</number><postcode>3089</postcode><city>Rotterdam</city>"
            "<country>NL</country></address></declarant>\n"
            "<addressedMemberState><countryCode>NL</countryCode></addressedMemberState>"
            "<customsOfficeOfFirstEntry><referenceNumber>NL000854</referenceNumber></customsOfficeOfFirstEntry>\n"
            "<activeBorderTransportMeans><ModeOfTransport>4</ModeOfTransport><estimatedDateAndTimeOfArrival>"
            "2026-12-01T14:00:00Z</estimatedDateAndTimeOfArrival><conveyanceReferenceNumber>DHL4711"
            "</conveyanceReferenceNumber></activeBorderTransportMeans>\n"
            "<carrier><identificationNumber>BE0123456789</identificationNumber></carrier>\n"
            "<consignmentHouseLevel><transportDocumentHouseLevel><documentNumber>EXP1234567890</documentNumber>"
            "<type>N741</type></transportDocumentHouseLevel><consignor><name>Shenzhen Export Co.</name><address>"
            "<city>Shenzhen</city><country>CN</country></address></consignor><consignee><identificationNumber>"
            "NL111222333</identificationNumber></consignee>\n")


_TAIL = "</consignmentHouseLevel>\n</IE3F32>\n"


def ens(size: int, lrn: str = "NLBENCH0000001", seed: int = 1) -> bytes:
    """An ENS of about ``size`` bytes (at least the header)."""
    rnd = random.Random(seed)
    parts = [_head(lrn)]
    n = len(parts[0]) + len(_TAIL)
    i = 0
    while n < size:
        i += 1
        s = _item(i, rnd)
        parts.append(s)
        n += len(s)
    parts.append(_TAIL)
    return "".join(parts).encode()


def ens_file(path: Path, size: int, lrn: str = "NLBENCHBIG00001", seed: int = 2) -> int:
    """Writes an ENS of about ``size`` bytes to ``path`` in blocks (never held whole); returns its size."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        n = f.write(_head(lrn).encode())
        i = 0
        while n < size - len(_TAIL):
            block = []
            for _ in range(2000):
                i += 1
                block.append(_item(i, rnd))
            n += f.write("".join(block).encode())
        n += f.write(_TAIL.encode())
    return n
