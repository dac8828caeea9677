"""Reading one split of a dataset with ``datasets``, from a hub name or from a local path.

Where a location points decides how it is read:

- a folder written by ``save_to_disk`` (``dataset_dict.json`` inside: the split is picked from it; a single saved
  ``Dataset``, ``state.json`` inside, serves whatever split is asked for);
- another folder: ``load_dataset(folder)``, which finds the splits from the file names (``train.jsonl``,
  ``test.csv``, ``validation-00000-of-00001.parquet``, …);
- a ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` file: that file is the split asked for; put ``{split}`` in
  the path (``data/liar_{split}.jsonl``) to keep one file per split;
- anything else is a hub name, read with ``load_dataset(name, subset, split=split)`` (offline when
  ``HF_HUB_OFFLINE=1``).

A relative path is looked up from the working directory, then from the config's own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prmsite.core.errors import ConfigError

FILE_BUILDERS = {
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
}


def resolve_location(location: str, split: str, *, base_dir: str | None = None) -> Path | None:
    """The local path ``location`` names (``{split}`` filled in), or ``None`` when it names no existing path."""
    try:
        filled = location.format(split=split) if "{split}" in location else location
    except (IndexError, KeyError, ValueError):
        filled = location
    candidates = [Path(filled).expanduser()]
    if base_dir and not Path(filled).is_absolute():
        candidates.append(Path(base_dir) / filled)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    return None


def local_location_allowed(location: str, *, allowed_dirs: list[Path], split: str = "test") -> bool:
    """Whether a location typed into a web form may be read: a hub name, or a local path inside ``allowed_dirs``.

    The admin's "Add forest" form runs with the server's permissions, so a local path there must not reach files the
    server can read outside the folders the operator listed (``PRM_DATASET_DIRS``). Symbolic links are resolved
    before the check; a path that does not exist but looks like one is refused too.
    """
    path = resolve_location(location, split)
    if path is None:
        if not _looks_like_a_path(location):
            return True  # a hub name
        path = Path(location.replace("{split}", split)).expanduser().resolve()  # judged by where it points
    roots = [Path(d).expanduser().resolve() for d in allowed_dirs]
    return any(path == root or root in path.parents for root in roots)


def load_split(location: str, split: str, *, subset: str | None = None, base_dir: str | None = None) -> Any:
    """Split ``split`` of the dataset at ``location`` as a ``datasets.Dataset`` (sized, iterates dicts).

    Raises :class:`ConfigError` with the reason when the dataset or the split cannot be read.
    """
    import datasets  # noqa: PLC0415 (deferred: datasets is heavy)

    path = resolve_location(location, split, base_dir=base_dir)
    try:
        if path is None:
            if _looks_like_a_path(location):
                raise ConfigError(f"dataset path {location!r} does not exist")
            return datasets.load_dataset(location, subset, split=split)
        if path.is_dir():
            if (path / "dataset_dict.json").exists():
                dataset_dict = datasets.load_from_disk(str(path))
                if split not in dataset_dict:
                    raise ConfigError(
                        f"dataset {str(path)!r} has no split {split!r} (splits: {', '.join(sorted(dataset_dict))})"
                    )
                return dataset_dict[split]
            if (path / "state.json").exists():
                return datasets.load_from_disk(str(path))
            return datasets.load_dataset(str(path), subset, split=split)
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(
                f"dataset file {str(path)!r} has an unknown type; use one of {', '.join(sorted(FILE_BUILDERS))}"
            )
        name, options = builder
        return datasets.load_dataset(name, data_files={split: str(path)}, split=split, **options)
    except ConfigError:
        raise
    except Exception as exc:  # datasets raises many kinds (ValueError, FileNotFoundError, hub errors, …)
        raise ConfigError(f"cannot read split {split!r} of dataset {location!r}: {exc}") from exc


def _looks_like_a_path(location: str) -> bool:
    return (
        location.startswith((".", "/", "~"))
        or Path(location.replace("{split}", "x")).suffix.lower() in FILE_BUILDERS
        or location.count("/") > 1
    )
