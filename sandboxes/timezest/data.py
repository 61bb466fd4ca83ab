"""Fixed values of the bundled TimeZest sandbox (kept apart so settings can name them without the app)."""

from __future__ import annotations

__all__ = ["SANDBOX_TIMEZEST_API_KEY"]

#: The API key the bundled TimeZest sandbox accepts. Not a secret: it only opens the emulator.
SANDBOX_TIMEZEST_API_KEY = "tz-sandbox-key"
