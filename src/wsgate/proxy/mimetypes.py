"""Content types by file extension, as nginx's ``types`` and its stock ``conf/mime.types``.

The stock table is nginx's own file (nginx/nginx ``conf/mime.types`` at commit 67d2a95,
2021-10-25) as data, so a config that gives no ``types`` answers what ``include
mime.types`` would. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Types = Mapping[str, str]
"""Lowercase extension (no dot) -> content type."""

DEFAULT_TYPE = "text/plain"
"""nginx's built-in ``default_type`` (its stock nginx.conf sets application/octet-stream)."""

NGINX_MIME_TYPES: tuple[tuple[str, str], ...] = (
    ("text/html", "html htm shtml"),
    ("text/css", "css"),
    ("text/xml", "xml"),
    ("image/gif", "gif"),
    ("image/jpeg", "jpeg jpg"),
    ("application/javascript", "js"),
    ("application/atom+xml", "atom"),
    ("application/rss+xml", "rss"),
    ("text/mathml", "mml"),
    ("text/plain", "txt"),
    ("text/vnd.sun.j2me.app-descriptor", "jad"),
    ("text/vnd.wap.wml", "wml"),
    ("text/x-component", "htc"),
    ("image/avif", "avif"),
    ("image/png", "png"),
    ("image/svg+xml", "svg svgz"),
    ("image/tiff", "tif tiff"),
    ("image/vnd.wap.wbmp", "wbmp"),
    ("image/webp", "webp"),
    ("image/x-icon", "ico"),
    ("image/x-jng", "jng"),
    ("image/x-ms-bmp", "bmp"),
    ("font/woff", "woff"),
    ("font/woff2", "woff2"),
    ("application/java-archive", "jar war ear"),
    ("application/json", "json"),
    ("application/mac-binhex40", "hqx"),
    ("application/msword", "doc"),
    ("application/pdf", "pdf"),
    ("application/postscript", "ps eps ai"),
    ("application/rtf", "rtf"),
    ("application/vnd.apple.mpegurl", "m3u8"),
    ("application/vnd.google-earth.kml+xml", "kml"),
    ("application/vnd.google-earth.kmz", "kmz"),
    ("application/vnd.ms-excel", "xls"),
    ("application/vnd.ms-fontobject", "eot"),
    ("application/vnd.ms-powerpoint", "ppt"),
    ("application/vnd.oasis.opendocument.graphics", "odg"),
    ("application/vnd.oasis.opendocument.presentation", "odp"),
    ("application/vnd.oasis.opendocument.spreadsheet", "ods"),
    ("application/vnd.oasis.opendocument.text", "odt"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("application/vnd.wap.wmlc", "wmlc"),
    ("application/wasm", "wasm"),
    ("application/x-7z-compressed", "7z"),
    ("application/x-cocoa", "cco"),
    ("application/x-java-archive-diff", "jardiff"),
    ("application/x-java-jnlp-file", "jnlp"),
    ("application/x-makeself", "run"),
    ("application/x-perl", "pl pm"),
    ("application/x-pilot", "prc pdb"),
    ("application/x-rar-compressed", "rar"),
    ("application/x-redhat-package-manager", "rpm"),
    ("application/x-sea", "sea"),
    ("application/x-shockwave-flash", "swf"),
    ("application/x-stuffit", "sit"),
    ("application/x-tcl", "tcl tk"),
    ("application/x-x509-ca-cert", "der pem crt"),
    ("application/x-xpinstall", "xpi"),
    ("application/xhtml+xml", "xhtml"),
    ("application/xspf+xml", "xspf"),
    ("application/zip", "zip"),
    ("application/octet-stream", "bin exe dll"),
    ("application/octet-stream", "deb"),
    ("application/octet-stream", "dmg"),
    ("application/octet-stream", "iso img"),
    ("application/octet-stream", "msi msp msm"),
    ("audio/midi", "mid midi kar"),
    ("audio/mpeg", "mp3"),
    ("audio/ogg", "ogg"),
    ("audio/x-m4a", "m4a"),
    ("audio/x-realaudio", "ra"),
    ("video/3gpp", "3gpp 3gp"),
    ("video/mp2t", "ts"),
    ("video/mp4", "mp4"),
    ("video/mpeg", "mpeg mpg"),
    ("video/quicktime", "mov"),
    ("video/webm", "webm"),
    ("video/x-flv", "flv"),
    ("video/x-m4v", "m4v"),
    ("video/x-mng", "mng"),
    ("video/x-ms-asf", "asx asf"),
    ("video/x-ms-wmv", "wmv"),
    ("video/x-msvideo", "avi"),
)
"""``conf/mime.types`` line by line: a type and its space-separated extensions, in order."""


def parse_types(config: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """The extension table of a ``types { }`` block given as type -> extensions (the
    config's ``{"text/html": ["html", "htm"]}``). As nginx: extensions are lowercased, and
    an extension listed twice keeps the later type (nginx warns "duplicate extension")."""
    table: dict[str, str] = {}
    for content_type, extensions in config.items():
        for extension in extensions:
            table[extension.lower()] = content_type
    return table


def _stock() -> dict[str, str]:
    table: dict[str, str] = {}
    for content_type, extensions in NGINX_MIME_TYPES:
        for extension in extensions.split():
            table[extension] = content_type
    return table


STOCK_TYPES: Types = _stock()
"""The table of nginx's ``conf/mime.types``: used when the config gives no ``types``."""


def extension(uri: bytes) -> bytes:
    """nginx's ``r->exten`` (``ngx_http_set_exten``): what follows the last dot of the
    URI's last segment, unless that dot starts the segment (``/.profile`` has none), and a
    dot at the URI's first two bytes never counts."""
    for i in range(len(uri) - 1, 1, -1):
        byte = uri[i]
        if byte == 0x2E and uri[i - 1] != 0x2F:  # "." not right after "/"
            return uri[i + 1:]
        if byte == 0x2F:
            return b""
    return b""


def content_type(uri: bytes, types: Types, default_type: str = DEFAULT_TYPE) -> str:
    """The Content-Type nginx gives the file served for ``uri``: its extension looked up
    case-insensitively, else ``default_type``."""
    ext = extension(uri)
    if ext:
        found = types.get(ext.decode("latin-1").lower())
        if found is not None:
            return found
    return default_type
