"""Writing without damage: every file a gpt2edu program writes is written elsewhere first, then published.

One mechanism for all of them (the converter's folder and .pth, the trainer's checkpoints and final model, the
inspector's pictures): write into a hidden staging folder beside the destination, on the same file system, and only
when everything is written move it into place with renames, which the file system does whole or not at all. A run
that fails, is interrupted or fills the disk leaves the destination as it was.
"""

import contextlib
import errno
import glob
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from .cli import UsageError


def check_output_dir(path: Path, flag: str) -> None:
    """Refuse an output folder that is a file, or that cannot be created or written.

    The test is a real one: a scratch folder is made in the nearest folder that exists (and removed at once), so
    places that look writable but are not (`/proc`, `/sys`, a read-only mount) are refused before any work is done.

    Raises:
        UsageError: Naming `flag` (e.g. "--output_dir") and the folder at fault.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file, not a folder; choose another {flag}")
    nearest = next((p for p in [path.absolute(), *path.absolute().parents] if p.exists()), None)
    why = None if nearest is not None and nearest.is_dir() else f"{nearest} is not a folder"
    if why is None:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".gpt2edu-probe-", dir=nearest))
        except OSError as error:
            if error.errno != errno.ENOSPC:  # a full disk is the writer's to report, as "no space left"
                why = f"{nearest} is not a writable folder"
    if why is not None:
        raise UsageError(f"{flag} {str(path)!r} cannot be created or written ({why}); choose another {flag}")


def is_full_disk(error: BaseException, folder: Path) -> bool:
    """Whether `error` comes from a full disk.

    torch.save reports it as a RuntimeError ("file write failed") and safetensors as a SafetensorError: besides the
    errno, the free space left where `folder` lives tells.
    """
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error):
        return True
    with contextlib.suppress(OSError):
        existing = next(p for p in [folder, *folder.parents] if p.is_dir())
        return shutil.disk_usage(existing).free < 1 << 20
    return False


@contextlib.contextmanager
def reporting_full_disk(folder: Path, message: str):
    """Turn a full disk met inside the block into UsageError(message); other errors pass unchanged."""
    try:
        yield
    except Exception as error:
        if not is_full_disk(error, folder):
            raise
        raise UsageError(message) from None


def ordinary_permissions(folder: Path) -> None:
    """Give the files in `folder` the permissions the user's umask gives new files (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)


def new_dir(folder: Path, prefix: str) -> Path:
    """Create an empty folder "PREFIX-xxxxxxxx" in `folder`, with the usual permissions."""
    while True:
        candidate = folder / f"{prefix}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileExistsError):
            candidate.mkdir()  # unlike tempfile.mkdtemp's 0700, honours the umask like any folder the user makes
            return candidate


def clean_stale_staging(path: Path, into: bool = False) -> None:
    """Clear what a run killed while writing `path` left behind.

    Staging folders (`.NAME.partial-*` beside `path`, or `.partial-*` inside it with `into`) are half-written
    output: removed. A `.NAME.old-*` folder holds the previous NAME set
    aside for a replacement: if NAME is gone (killed between the two renames) it is moved back, otherwise removed.
    """
    if into:
        for stale in path.glob(".partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f".{glob.escape(path.name)}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in path.parent.glob(f".{glob.escape(path.name)}.old-*"):
        if not path.exists() and (old / path.name).exists():
            (old / path.name).rename(path)
        shutil.rmtree(old, ignore_errors=True)


def publish(staging: Path, destination: Path, into: bool = False) -> None:
    """Move a completely written `staging` folder into place.

    Args:
        staging: The folder the files were written into, on the same file system as `destination`.
        destination: The folder to publish. Without `into`, `staging` becomes `destination`, replacing an existing
            one only once the new one is complete (the old one is set aside, and put back if the rename fails).
        into: Move each file of `staging` into the existing folder `destination` instead, leaving its other files.
    """
    ordinary_permissions(staging)
    if into:
        for path in staging.iterdir():
            os.replace(path, destination / path.name)
        staging.rmdir()
    elif destination.exists():
        old = new_dir(destination.parent, f".{destination.name}.old")
        destination.rename(old / destination.name)
        try:
            staging.rename(destination)
        except OSError:
            (old / destination.name).rename(destination)
            raise
        shutil.rmtree(old)
    else:
        staging.rename(destination)


@contextlib.contextmanager
def atomic_write(destination: Path, into: bool = False, full_disk_message: str | None = None, file: bool = False):
    """Yield an empty staging folder beside `destination`; publish it there only if the block succeeds.

    Args:
        destination: The folder to write (see `publish` for `into`). With `into`, it is created if missing.
        into: Add the staged files to `destination` instead of making the staging folder `destination`.
        full_disk_message: If given, a full disk becomes UsageError(full_disk_message).
        file: `destination` names a file, not a folder (and not with `into`): the block writes it, with any companion
            files (a .pth and its .config.json), into the staging folder `.NAME.partial-*` beside it, and each file is
            then moved into `destination`'s folder, replacing one of the same name.

    On any failure the staging folder is removed and `destination` is left as it was: the folders this call created
    for it are removed again (unless something else has been written into them meanwhile).
    """
    destination = Path(destination)
    clean_stale_staging(destination, into)
    created = [folder for folder in [destination, *destination.parents] if not folder.exists()]  # deepest first
    if into:  # staged inside: the files' renames stay on one file system
        destination.mkdir(parents=True, exist_ok=True)
        staging = new_dir(destination, ".partial")
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = new_dir(destination.parent, f".{destination.name}.partial")
    target, add = (destination.parent, True) if file else (destination, into)
    try:
        if full_disk_message is None:
            yield staging
            publish(staging, target, add)
        else:
            with reporting_full_disk(staging, full_disk_message):
                yield staging
                publish(staging, target, add)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: another writer's folder now, or one published into
                folder.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful publish
