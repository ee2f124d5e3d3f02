"""Read a cold-start SFT set from disk into TRL prompt/completion rows, checking it as it goes.

Two layouts are read, per record (a file may mix them):
- TRL's conversational vision format: `messages` = [{role, content}], `images` (or `image`);
- LLaVA / ShareGPT, the layout Vision-R1-cold ships in: `conversations` = [{from, value}] with
  from in human/user, gpt/assistant, system, and `image` (a string or a list) or `images`.
An image is a path (relative to the file that names it, else to `cold_start.path`, or absolute), a
`data:image/...;base64,` URI, or embedded bytes ({"bytes": ...} as a hub parquet stores them).
`<image>` in a user turn marks where an image goes; without any, the images precede the first
user text (TRL's and LLaVA's convention). The last assistant turn is the completion trained on;
earlier turns are its prompt. Files: .json (a list of records), .jsonl, .parquet; a folder is
every such file below it except LLaMA-Factory's `dataset_info.json`.

Every problem is raised as ValueError naming `cold_start.path`, the file, the record and the value,
before any training starts (and before a sweep is queued: care.preflight). Text is checked as training
text is (care.data.rows: no lone surrogates, NULs removed, tokenizer control tokens escaped). Every
image is decoded whole once and converted to RGB as training images are (care.data.images), so a
truncated or 16-bit picture fails or is fixed here, not mid-training.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path

SUFFIXES = (".json", ".jsonl", ".parquet")
NOT_RECORDS = ("dataset_info.json",)  # LLaMA-Factory's dataset registry, shipped beside the data
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PLACEHOLDER = re.compile(r"<image>")
KEY = "cold_start.path"


class SFTDataError(ValueError):
    pass


def data_files(path: str | Path) -> list[Path]:
    """The record files under `path` (a file or a folder), sorted; raise naming the key if none."""
    root = Path(path).expanduser()
    if root.is_file():
        if root.suffix not in SUFFIXES:
            raise SFTDataError(f"{KEY}={str(path)!r} is a {root.suffix or 'suffix-less'} file; "
                               f"accepted: {', '.join(SUFFIXES)} files or a folder of them")
        return [root]
    if not root.is_dir():
        raise SFTDataError(f"{KEY}={str(path)!r} does not exist; point it at a file or folder of SFT conversations")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES and p.name not in NOT_RECORDS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise SFTDataError(f"{KEY}={str(path)!r} holds no {', '.join(SUFFIXES)} file")
    return files


def content_digest(path: str | Path) -> str:
    """sha256 over the record files' names and bytes and the bytes of every image they reference by
    path: the cold start's cache key for this data (embedded images are in the files' bytes).

    Digests come from `care.hashing.file_digests`, memoised per machine, so a 200K-image set is read
    once, not per job. Only names relative to `path` and bytes enter it: a copy elsewhere hashes the same.
    An image that cannot be found enters as its reference; `load_sft_rows` raises on it before training.
    """
    from care.hashing import file_digests

    root = Path(path).expanduser()
    folder = root if root.is_dir() else root.parent
    files = data_files(root)
    hasher = hashlib.sha256()
    for file, file_hash in zip(files, file_digests(files), strict=True):
        hasher.update(f"{file.relative_to(root) if root.is_dir() else file.name}\0{file_hash}\n".encode())
        refs = image_references(file)
        found = [locate(referenced_path(value), file.parent, folder)[1] for value in refs]
        present = sorted({f for f in found if f is not None})
        digests = dict(zip(present, file_digests(present), strict=True))
        for value, image in zip(refs, found, strict=True):
            hasher.update(f"{digests[image] if image else 'missing:' + referenced_path(value)}\n".encode())
    return hasher.hexdigest()[:16]


_REFERENCES: dict[tuple[str, str], list] = {}  # (file, its stat key) -> the image values it names by path


def image_references(file: Path) -> list:
    """The image values `file`'s records name by path, in order. Remembered per process by the file's
    stat key (care.hashing: any change to its bytes changes it), so the cold-start key computed by the
    preflight, the phase header and the build parses a 200K-record set once, not each time; the images'
    own bytes are digested afresh (memoised by their stat) every time."""
    import time

    from care.hashing import RACY_SECONDS, stat_key

    st = Path(file).stat()
    key = (str(Path(file).resolve()), stat_key(st))
    if key in _REFERENCES:
        return _REFERENCES[key]
    references = [value for record in read_records(file) if isinstance(record, dict)
                  for value in image_values(record) if referenced_path(value)]
    if time.time() - st.st_mtime > RACY_SECONDS:  # as care.hashing: a file written this tick may change again
        _REFERENCES[key] = references
    return references


def read_records(file: Path) -> list[dict]:
    """The file's records; a JSONL line that does not parse fails naming its line number."""
    return [record for record, _ in numbered_records(file)]


def numbered_records(file: Path) -> list[tuple[dict, str]]:
    """(record, "record N" or "line N") for each record of the file, N as a person counts (JSONL lines
    from 1, records of a list from 0 as they are indexed)."""
    where = f"{KEY}: {file}"
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq
            return [(record, f"record {n}") for n, record in enumerate(pq.read_table(file).to_pylist())]
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".jsonl":
            out = []
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    out.append((json.loads(line), f"line {number}"))
                except ValueError as err:
                    raise SFTDataError(f"{where} line {number} is not JSON ({err})") from err
            return out
        records = json.loads(text)
    except (OSError, ValueError) as err:  # JSONDecodeError and pyarrow's ArrowInvalid are ValueErrors
        raise SFTDataError(f"{where} cannot be read: {err}") from err
    if not isinstance(records, list):
        raise SFTDataError(f"{where} holds a JSON {type(records).__name__}; expected a list of records")
    return [(record, f"record {n}") for n, record in enumerate(records)]


_CHECKED: set[str] = set()  # content digests of the sets this process has read whole without a problem


def check_sft_set(path: str | Path) -> None:
    """`load_sft_rows` for its checks alone, once per process and content (a sweep's launcher checks
    each of its jobs)."""
    key = content_digest(path)
    if key not in _CHECKED:
        load_sft_rows(path)
        _CHECKED.add(key)


def load_sft_rows(path: str | Path) -> list[dict]:
    """Every record under `path` as {"images": [{"bytes", "path"}], "prompt": [...], "completion": [...]}."""
    root = Path(path).expanduser()
    folder = root if root.is_dir() else root.parent
    rows = []
    for file in data_files(root):
        for record, position in numbered_records(file):
            rows.append(to_row(record, f"{KEY}={str(path)!r}: {file} {position}", file.parent, folder))
    if not rows:
        raise SFTDataError(f"{KEY}={str(path)!r} holds no records")
    return rows


def to_row(record, where: str, file_dir: Path, root: Path) -> dict:
    if not isinstance(record, dict):
        raise SFTDataError(f"{where} is a {type(record).__name__}, not a record")
    turns = conversation(record, where)
    images = [image_ref(value, f"{where}: image {i}", file_dir, root) for i, value in enumerate(image_values(record))]
    messages = [{"role": role, "content": blocks(content, role)} for role, content in turns]
    placeholders = sum(block["type"] == "image" for m in messages for block in m["content"])
    if placeholders == 0 and images:  # no <image> marks: the images precede the first user text
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"][:0] = [{"type": "image", "text": None} for _ in images]
    elif placeholders != len(images):
        raise SFTDataError(f"{where} marks {placeholders} <image> places but lists {len(images)} images")
    last = messages.pop()
    completion_text = "".join(block["text"] for block in last["content"] if block["type"] == "text")
    return {"images": images, "prompt": messages, "completion": [{"role": "assistant", "content": completion_text}]}


def conversation(record: dict, where: str) -> list[tuple[str, object]]:
    """[(role, content)] from `messages` (role/content) or `conversations` (from/value)."""
    if "messages" in record:
        key, role_key, text_key = "messages", "role", "content"
    elif "conversations" in record:
        key, role_key, text_key = "conversations", "from", "value"
    else:
        raise SFTDataError(f"{where} has neither 'messages' (TRL conversational: role/content) nor 'conversations' "
                           f"(LLaVA/ShareGPT: from/value); its keys: {', '.join(map(str, record)) or 'none'}")
    turns = record[key]
    if not isinstance(turns, list) or not turns:
        raise SFTDataError(f"{where}: {key!r} must be a non-empty list of turns; got {turns!r:.80}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise SFTDataError(f"{where}: {key}[{i}] needs {role_key!r} and {text_key!r}; got {turn!r:.80}")
        role = ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise SFTDataError(f"{where}: {key}[{i}].{role_key}={turn[role_key]!r} is not accepted; "
                               f"choose one of {', '.join(ROLES)}")
        out.append((role, checked_content(turn[text_key], f"{key}[{i}].{text_key}", where)))
    if out[-1][0] != "assistant" or not any(role == "user" for role, _ in out):
        raise SFTDataError(f"{where}: {key!r} must hold a user turn and end with an assistant turn to train on; "
                           f"its roles: {', '.join(role for role, _ in out)}")
    return out


def checked_content(content, column: str, where: str):
    """A turn's content as text (or TRL's list of {"type": "text"|"image"} parts; plain strings in a list
    are text parts), with NULs removed and tokenizer control tokens escaped (care.data.rows); anything
    else, or text that is not valid Unicode, raises naming the record and the field."""
    from care.data.rows import RowProblem, check_text

    def text(value, field: str) -> str:
        try:
            return check_text("" if value is None else value, field, required=False)
        except RowProblem as problem:
            raise SFTDataError(f"{where}: {problem}") from None

    if not isinstance(content, list):
        return text(content, column)
    parts = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            parts.append({"type": "text", "text": text(part, f"{column}[{i}]")})
        elif isinstance(part, dict) and part.get("type") == "image":
            parts.append({"type": "image", "text": None})
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            parts.append({"type": "text", "text": text(part.get("text"), f"{column}[{i}].text")})
        else:
            raise SFTDataError(f"{where}: {column}[{i}] is {part!r:.80}; accepted: a string, {{'type': 'text', "
                               "'text': ...} or {'type': 'image'}")
    return parts


def blocks(content, role: str) -> list[dict]:
    """Structured content blocks ({"type", "text"}); `<image>` marks in user text become image blocks."""
    if isinstance(content, list):  # already structured (checked_content): text and image places
        return content
    text = content
    if role != "user":
        return [{"type": "text", "text": text}]
    out = []
    for i, piece in enumerate(PLACEHOLDER.split(text)):
        if i:
            out.append({"type": "image", "text": None})
        if piece.strip():
            out.append({"type": "text", "text": piece.strip("\n")})
    return out


def image_values(record: dict) -> list:
    value = record.get("images", record.get("image"))
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def image_ref(value, where: str, file_dir: Path, root: Path) -> dict:
    """{"bytes", "path"} as `datasets.Image` stores it, after checking the image opens."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        data = value["bytes"]
        if isinstance(data, str):
            data = decode_base64(data, where)
        return check_image({"bytes": bytes(data), "path": None}, where)
    if isinstance(value, dict) and value.get("path"):
        value = value["path"]
    if not isinstance(value, str) or not value:
        raise SFTDataError(f"{where}: {value!r:.80} is not an image (a path, a data: URI or {{'bytes': ...}})")
    if value.startswith("data:"):
        return check_image({"bytes": decode_base64(value.split(",", 1)[-1], where), "path": None}, where)
    candidates, found = locate(value, file_dir, root)
    if found is None:
        tried = " or ".join(dict.fromkeys(str(c) for c in candidates))
        raise SFTDataError(f"{where}: {value!r} is unreadable: no such file ({tried})")
    return check_image({"bytes": None, "path": str(found)}, where)


def referenced_path(value) -> str | None:
    """The file an image value names by path (a string or {"path"} without bytes); None for embedded ones."""
    if isinstance(value, dict) and value.get("bytes") is None:
        value = value.get("path")
    if isinstance(value, str) and value and not value.startswith("data:"):
        return value
    return None


def locate(value: str, file_dir: Path, root: Path) -> tuple[list[Path], Path | None]:
    """Where an image path may be (relative to its file, else to `cold_start.path`, or absolute) and
    the first that exists, resolved; one rule for loading and for `content_digest`."""
    candidates = [Path(value).expanduser()] if Path(value).expanduser().is_absolute() else [file_dir / value,
                                                                                           root / value]
    found = next((c for c in candidates if c.is_file()), None)
    return candidates, found.resolve() if found is not None else None


def decode_base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise SFTDataError(f"{where}: embedded image is not valid base64 ({err})") from err


def check_image(ref: dict, where: str) -> dict:
    """`ref` when its image decodes whole and is RGB within the limits; else {"bytes": <PNG>} of the
    image converted as care.data.images does (16-bit, alpha, CMYK, oversized), or SFTDataError."""
    from care.data.images import ImageProblem, checked_image, open_encoded

    shown = ref["path"] or f"{len(ref['bytes'])} embedded bytes"
    try:
        data = ref["bytes"] if ref["bytes"] is not None else Path(ref["path"]).read_bytes()
        image = open_encoded(data)
        checked = checked_image(image)
    except OSError as err:
        raise SFTDataError(f"{where}: {shown!r} is unreadable ({err})") from err
    except ImageProblem as err:
        raise SFTDataError(f"{where}: {shown!r} is unreadable as an image: {err}") from None
    if checked is image:
        return ref
    return {"bytes": checked.care_encoded, "path": None}
