"""Upload a compressed checkpoint folder to the Hub, card included (`llava-fa push`).

:func:`push_folder` checks everything it can before the first request (folder, compressed config,
shipped remote code, our card's metadata, a token, online mode, compatible options), then
``create_repo(exist_ok=True)`` (``private`` applies to a new repo), ``create_branch`` for a
``revision`` that does not exist yet, and one ``upload_folder`` commit (or pull request with
``create_pr``). It never writes into the folder, so a failed upload leaves it as it was; Hub
errors become a :class:`PushError` whose message names the HTTP status and the server's reason.

Unlike transformers' ``push_to_hub``, which uploads a generic card when the repo has none, the
folder's ``README.md`` (written by :func:`llava_fa.hub.card.write_model_card`) is what lands.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

#: Never uploaded: hidden files and folders (e.g. huggingface_hub's .cache), temporary files, bytecode.
IGNORE_PATTERNS: tuple[str, ...] = (".*", "**/.*", "*.tmp", "**/*.tmp", "__pycache__", "**/__pycache__/**", "*.pyc",
                                    "**/*.pyc")


class PushError(RuntimeError):
    """A push that did not happen; `str()` is the one-line reason."""


@dataclass
class PushResult:
    """What was pushed: the commit (or pull request) and the uploaded file names."""

    repo_id: str
    url: str
    commit_oid: Optional[str]
    pr_url: Optional[str]
    files: list[str] = field(default_factory=list)


def upload_files(folder: Path) -> list[str]:
    """Relative paths `upload_folder` will send (files not matched by :data:`IGNORE_PATTERNS`)."""
    from huggingface_hub.utils import filter_repo_objects

    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=list(IGNORE_PATTERNS)))


def check_push_folder(folder: Union[str, os.PathLike]) -> list[str]:
    """Raise :class:`PushError` unless `folder` is a compressed checkpoint with its remote code and our card;
    return the files to upload."""
    from .card import check_model_card
    from .checkpoint import CheckpointError, quant_method, resolve_checkpoint

    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder}: no such folder.")
    try:
        resolve_checkpoint(folder)
        method = quant_method(folder)
    except CheckpointError as exc:
        raise PushError(str(exc)) from None
    if method != "fourier_approx":
        raise PushError(f"{folder}: not a llava-fa compressed checkpoint (quant_method={method}); compress it first.")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    modules = {ref.split(".", 1)[0] for ref in (config.get("auto_map") or {}).values() if isinstance(ref, str)}
    missing_code = sorted(m + ".py" for m in modules if not (folder / f"{m}.py").is_file())
    if not modules or missing_code:
        raise PushError(f"{folder}: the remote code is incomplete (auto_map {'missing' if not modules else 'refers to'} "
                        f"{', '.join(missing_code)}); re-save it with save_pretrained from llava_fa.")
    readme = folder / "README.md"
    if not readme.is_file():
        raise PushError(f"{folder}: no README.md; write the card first: `llava-fa card {folder} --base-model ID`.")
    try:
        check_model_card(readme)
    except ValueError as exc:
        raise PushError(f"{readme}: {exc} Regenerate it with `llava-fa card {folder} --base-model ID`.") from None
    return upload_files(folder)


def _http_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    server = getattr(exc, "server_message", None) or ""
    if not server and response is not None:
        server = response.headers.get("X-Error-Message", "")
    first = " ".join(str(exc).split("\n")[0].split())
    return (f"HTTP {status}: " if status else "") + (server.strip() or first)


def push_folder(
    folder: Union[str, os.PathLike],
    repo_id: str,
    *,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    create_pr: bool = False,
    commit_message: Optional[str] = None,
    token: Optional[str] = None,
) -> PushResult:
    """Upload `folder` to the model repo `repo_id` (created if needed); see the module docstring.

    `private`: visibility of a new repo (None: the namespace's default; ignored for an existing repo).

    Raises :class:`PushError` (nothing sent) for a bad folder, a missing token, offline mode, or
    `create_pr` together with `revision`; and (after requests) when the Hub refuses the upload.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise PushError(f"REPO_ID {repo_id!r}: expected 'name' or 'namespace/name'.")
    files = check_push_folder(folder)
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token.")
    if constants.HF_HUB_OFFLINE:
        raise PushError("offline mode is on (HF_HUB_OFFLINE=1); unset it to push.")
    if create_pr and revision:
        raise PushError("--create-pr opens a pull request against the default branch; drop --revision, or push "
                        "to the branch without --create-pr.")
    api = HfApi(token=token)
    message = commit_message or f"Upload llava-fa compressed model ({len(files)} files)"
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = repo_url.repo_id
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                 commit_message=message, ignore_patterns=list(IGNORE_PATTERNS), repo_type="model")
    except HfHubHTTPError as exc:
        raise PushError(f"upload to {repo_id} failed ({_http_reason(exc)}); nothing was changed locally.") from None
    except (ValueError, OSError) as exc:
        raise PushError(f"upload to {repo_id} failed ({' '.join(str(exc).split())}); nothing was changed "
                        f"locally.") from None
    return PushResult(repo_id=repo_id, url=str(getattr(info, "commit_url", info)), commit_oid=getattr(info, "oid", None),
                      pr_url=getattr(info, "pr_url", None), files=files)


__all__ = ["IGNORE_PATTERNS", "PushError", "PushResult", "check_push_folder", "push_folder", "upload_files"]
