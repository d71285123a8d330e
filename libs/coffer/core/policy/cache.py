"""Parse once: compiled policies cached by (kind, name, content hash). Pure (an in-memory LRU)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from coffer.core.policy.grammar import parse_policy
from coffer.core.policy.model import Policy, PolicyKind


class PolicyCache:
    """A bounded LRU of compiled policies. Parsing errors are not cached (they raise every time)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[PolicyKind, str, bool, bytes], Policy] = OrderedDict()

    def get(
        self,
        text: str,
        kind: PolicyKind = PolicyKind.IDENTITY,
        *,
        name: str = "",
        require_current: bool = False,
    ) -> Policy:
        key = (kind, name, require_current, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        policy = parse_policy(text, kind, require_current=require_current, name=name)
        self._items[key] = policy
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return policy

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
