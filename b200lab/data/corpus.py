"""The default text corpus: Python standard-library sources already on the machine.

Nothing is downloaded. The corpus is a fixed, sorted list of 99 module files that every CPython
3.10-3.13 ships under the same relative path (checked against 3.10.13, 3.11.7, 3.12.1 and 3.13.0),
read from ``sysconfig.get_paths()["stdlib"]``: about 4.3 MB of English prose (docstrings,
comments) and code. Each file is one document. The files' contents differ between Python
versions (and patch releases), so two runs score the same text only when their corpus sha256
(``effective.data.corpus.sha256``) match.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

MODULES = (
    "argparse ast base64 calendar cmd codecs configparser contextlib copy csv dataclasses difflib doctest enum "
    "fractions ftplib functools getopt gettext glob gzip heapq hmac imaplib inspect ipaddress locale mailbox "
    "mimetypes numbers operator optparse os pdb pickle pickletools platform plistlib posixpath pprint pydoc queue "
    "random shlex shutil smtplib socket statistics string subprocess tarfile tempfile textwrap threading tokenize "
    "trace traceback typing uuid warnings weakref"
).split()
PACKAGE_FILES = (
    "asyncio/base_events.py asyncio/events.py asyncio/streams.py asyncio/tasks.py collections/__init__.py "
    "concurrent/futures/_base.py concurrent/futures/process.py concurrent/futures/thread.py "
    "email/_header_value_parser.py "
    "email/feedparser.py email/header.py email/message.py email/parser.py email/utils.py html/parser.py "
    "http/client.py http/cookiejar.py http/cookies.py http/server.py importlib/_bootstrap.py "
    "importlib/_bootstrap_external.py json/__init__.py json/decoder.py json/encoder.py logging/__init__.py "
    "logging/config.py logging/handlers.py multiprocessing/connection.py multiprocessing/pool.py sqlite3/__init__.py "
    "unittest/case.py unittest/loader.py unittest/main.py unittest/mock.py urllib/parse.py urllib/request.py "
    "xml/dom/minidom.py xml/etree/ElementTree.py"
).split()
FILES = tuple(sorted([f"{m}.py" for m in MODULES] + PACKAGE_FILES))


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def default_files() -> tuple[Path, list[str], list[str]]:
    """(the stdlib folder, the corpus files present there, those missing). A Python that lacks some
    of them (a trimmed distribution) still gets a corpus; the missing ones are recorded."""
    root = stdlib_dir()
    present = [f for f in FILES if (root / f).is_file()]
    return root, present, [f for f in FILES if f not in present]
