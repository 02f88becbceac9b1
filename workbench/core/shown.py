"""Text from files, folder names or user code made safe to show: control characters become visible escapes.

A class name, a run folder's name or a value in config.toml may hold ESC, BEL or CSI; printed
raw they are commands to the terminal (OSC 52 writes the clipboard, CSI 2J clears the screen,
OSC 0 retitles the window). `shown()` turns every such character into the escape a Python
string would use (`\\x1b`, `\\x9b`, `\\u202e`), so the user sees what is in the file and the
terminal obeys nothing. Normal Unicode (accents, CJK, emoji) is kept. This is not Rich markup
escaping: text that goes through Rich markup still needs `rich.markup.escape` as well.
"""

from __future__ import annotations

import unicodedata

# Joiners inside emoji and scripts that need them; every other format character (bidi overrides
# that reorder what is shown, zero-width spaces) is escaped.
_KEPT_FORMAT = {"\u200c", "\u200d"}


def shown(text: object) -> str:
    """str(text) with control and other non-printable characters as visible escapes."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value
    return "".join(character if _harmless(character) else _escape(character) for character in value)


def _harmless(character: str) -> bool:
    if character.isprintable() or character in _KEPT_FORMAT:
        return True
    return unicodedata.category(character) == "Zs"  # no-break and other spaces show as spaces


def _escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
