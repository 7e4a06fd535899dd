"""Local rate limiting: a token bucket per RateLimit, refilled on a fixed interval."""

from __future__ import annotations

from tulle.engine.config import BucketSpec


class TokenBucket:
    """``spec.max_tokens`` tokens, ``spec.tokens_per_fill`` more every ``spec.interval``."""

    def __init__(self, spec: BucketSpec, now: float) -> None:
        self.spec = spec
        self.tokens = float(spec.max_tokens)
        self.filled_at = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        spec = self.spec
        fills = int((now - self.filled_at) / spec.interval)
        if fills:
            self.tokens = min(spec.max_tokens, self.tokens + fills * spec.tokens_per_fill)
            self.filled_at += fills * spec.interval
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
