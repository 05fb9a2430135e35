"""Which category goes next: A before B before C (ICD table 7), without starving B and C.

A smooth weighted round robin over the categories that have work: with weights A=6, B=3, C=1, a backlog that
drains after an outage sends six A messages for every three B and one C, instead of all A first. When only one
category has work it gets every slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_WEIGHTS = {"A": 6, "B": 3, "C": 1}


@dataclass
class PriorityPicker:
    weights: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    _current: dict[str, int] = field(default_factory=dict)

    def pick(self, available: Iterable[str]) -> str | None:
        """The category to serve next among those with work (nginx-style smooth weighted round robin)."""
        cats = [c for c in available if c in self.weights]
        if not cats:
            return None
        total = sum(self.weights[c] for c in cats)
        for c in cats:
            self._current[c] = self._current.get(c, 0) + self.weights[c]
        best = max(cats, key=lambda c: (self._current[c], -"ABC".index(c)))
        self._current[best] -= total
        return best

    def plan(self, counts: dict[str, int], slots: int) -> list[str]:
        """Categories for the next ``slots`` sends, given how many are waiting in each."""
        left = dict(counts)
        out: list[str] = []
        while len(out) < slots:
            c = self.pick([k for k, v in left.items() if v > 0])
            if c is None:
                break
            left[c] -= 1
            out.append(c)
        return out
