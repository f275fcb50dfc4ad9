"""wsgate convert: an nginx configuration as wsgate's TOML.

Prints the TOML equivalent of an nginx.conf (or an http block, or a conf.d snippet), each
key under a comment with the nginx line it came from; directives that have no effect in
wsgate are listed at the top. The result is checked as wsgate would read it, so a file
that converts is one that runs: wsgate proxy -c nginx.conf and wsgate proxy -c
converted.toml do the same thing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsgate.errors import Failure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="NGINX_CONF", help="the nginx configuration to convert")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the TOML here instead of to stdout")


def run(args: argparse.Namespace) -> int:
    from wsgate.proxy import configfile, configload, convert, nginxconf

    path = Path(args.file)
    translated = nginxconf.translate(path)
    origins = {label: f"{origin.file}:{origin.line}"
               for label, origin in translated.origins.items()}
    configload.ready(configfile.from_document(translated.document, path.absolute().parent,
                                              args.file, origins, translated.ignored, "nginx"))
    text = convert.to_toml(translated, path.name)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text)
    except OSError as error:
        raise Failure(f"cannot write {args.output}: {error.strerror}") from None
    return 0
