"""One spelling for every ``--source`` and ``--sink`` (jetson-inference's single URI type):
``scheme://location?options``, ``NAME:key=value,...`` for the named ones (``synthetic``),
or a plain path or name; and the one ``key=value`` parser that reads URI options, data
spec options and ``--set`` items alike.

A URI may carry a password (``rtsp://user:pw@cam/stream``): ``str(uri)`` and ``repr(uri)``
never show it, and :func:`redact_url` hides it in any URL text that is printed or logged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from adedge.errors import AdedgeError

URL_SEPARATOR = "://"
QUERY_SEPARATOR = "&"  # between the options of scheme://location?options (percent-encoded)
NAMED_SEPARATOR = ","  # between the options of NAME:key=value,...
LOCAL_HOSTS = ("", "localhost")  # a file:// URI's host that names this machine


# --- key=value ---------------------------------------------------------------------------------


def split_items(text: str, separator: str = NAMED_SEPARATOR) -> list[str]:
    """``a=1, b=2,,`` -> ``["a=1", "b=2"]``: items stripped, empty ones left out."""
    return [item.strip() for item in text.split(separator) if item.strip()]


def split_pair(item: str, decode: Callable[[str], str] | None = None) -> tuple[str, str, bool]:
    """``key=value`` -> (key, value, True), each side stripped (and decoded); an item with
    no ``=`` -> (item, "", False)."""
    key, eq, value = item.partition("=")
    if decode is not None:
        key, value = decode(key), decode(value)
    return key.strip(), value.strip(), bool(eq)


def parse_key_values(
    items: Iterable[str],
    *,
    problem: Callable[[str], AdedgeError],
    known: Collection[str] | None = None,
    decode: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Each ``key=value`` item as a dict entry (keys and values stripped; a later key wins).
    An item with no ``=``, an empty key, or a key outside ``known`` raises ``problem(item)``,
    so each caller words its own one-line error."""
    values: dict[str, str] = {}
    for item in items:
        key, value, has_value = split_pair(item, decode)
        if not has_value or not key or (known is not None and key not in known):
            raise problem(item)
        values[key] = value
    return values


# --- URIs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Uri:
    """A parsed ``--source`` or ``--sink``.

    ``scheme``: lower case; "" for a plain path or name. ``location``: what the scheme names
    (host and path, a device, a display number, a file), as typed. ``query``: the options'
    text (after ``?``, or after ``NAME:``), split on ``separator``. ``text``: the whole as
    typed, stripped; it may hold a password, so print ``str(uri)``.
    """

    text: str
    scheme: str = ""
    location: str = ""
    query: str = ""
    separator: str = QUERY_SEPARATOR

    @property
    def is_url(self) -> bool:
        """Spelled ``scheme://...`` (rather than a path, a name or ``NAME:options``)."""
        return self.separator == QUERY_SEPARATOR and bool(self.scheme)

    @property
    def options(self) -> list[str]:
        """The option items as typed (``a=1``, ``flag``), in order."""
        return split_items(self.query, self.separator)

    def _decode(self) -> Callable[[str], str] | None:
        return unquote_plus if self.separator == QUERY_SEPARATOR else None

    def values(
        self, problem: Callable[[str], AdedgeError], known: Collection[str] | None = None
    ) -> dict[str, str]:
        """The options as ``key -> value`` (see :func:`parse_key_values`)."""
        return parse_key_values(self.options, problem=problem, known=known, decode=self._decode())

    def take_option(self, key: str) -> tuple[Uri, list[str]]:
        """This URI without the options named ``key`` (others kept exactly as typed), and
        their values in order: options that are ours, not the camera's."""
        kept, taken = [], []
        for item in self.options:
            name, value, _ = split_pair(item, self._decode())
            if name == key:
                taken.append(value)
            else:
                kept.append(item)
        if not taken:
            return self, []
        query = self.separator.join(kept)
        head = self.text[: len(self.text) - len(self.query) - 1]  # without "?options"
        mark = "?" if self.separator == QUERY_SEPARATOR else ":"
        text = f"{head}{mark}{query}" if query else head
        return Uri(text, self.scheme, self.location, query, self.separator), taken

    @property
    def path(self) -> str:
        """The local file a ``file://`` (or ``jsonl://``) URI names, percent-decoded:
        ``file:///abs/x.mp4`` -> ``/abs/x.mp4``, ``file://rel/x.mp4`` -> ``rel/x.mp4``,
        ``file://localhost/x`` -> ``/x``; a plain path as it is."""
        if not self.is_url:
            return self.location
        host, slash, rest = self.location.partition("/")
        if host in LOCAL_HOSTS:
            return unquote(slash + rest)
        return unquote(self.location)

    def __str__(self) -> str:
        return redact_url(self.text)

    def __repr__(self) -> str:
        return f"Uri({str(self)!r})"


def parse_uri(text: str, named: Collection[str] = ()) -> Uri:
    """``scheme://location?options``, or ``NAME[:key=value,...]`` for a ``NAME`` in ``named``
    (exact spelling), or a plain path or name (scheme ""). Never fails: what a scheme or its
    options mean is the caller's to check, with its own one-line errors."""
    text = str(text).strip()
    head, url, rest = text.partition(URL_SEPARATOR)
    if url:
        location, _, query = rest.partition("?")
        return Uri(text, head.lower(), location, query, QUERY_SEPARATOR)
    name, colon, options = text.partition(":")
    if name in named and (colon or name == text):
        return Uri(text, name, "", options, NAMED_SEPARATOR)
    return Uri(text, "", text)


def redact_url(url: str) -> str:
    """The URL without its password, so it can be logged and written to events (the host
    and port are kept as typed: a port that is not a number must not break a message)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not (at and colon):
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
