"""An in-process fake Hugging Face Hub for offline push tests (huggingface_hub 2.x, httpx2).

`FakeHub.install()` makes every request of `huggingface_hub` (and so of transformers'
`push_to_hub`) go to :meth:`FakeHub.handler` through an ``httpx2.MockTransport``: no socket is
ever opened. Implemented routes (model repos only):

* ``POST /api/repos/create``: records the payload (``visibility`` for ``--private``), returns ``{"url"}``;
  409 when the repo exists (``exist_ok=True`` callers tolerate it).
* ``POST /api/validate-yaml``: parses the README's YAML front matter locally (400 on invalid YAML).
* ``POST /api/models/{repo}/branch/{branch}``: creates a branch from ``main`` (409 if it exists).
* ``POST /api/models/{repo}/preupload/{rev}``: every file ``uploadMode: "regular"`` (no LFS/Xet).
* ``POST /api/models/{repo}/commit/{rev}``: decodes the NDJSON ``header`` / ``file`` (base64) /
  ``deletedFile`` lines into the revision's file dict; with ``create_pr=1`` into ``refs/pr/N``.
* ``POST /api/models/{repo}/discussions`` (pull requests only: a new ``refs/pr/N`` copied from
  ``main``) and ``GET /api/models/{repo}/discussions/{N}`` (its details).
* ``GET /api/models/{repo}/revision/{rev}`` (repo info with ``siblings``) and
  ``GET /api/models/{repo}/tree/{rev}`` (file list), for ``snapshot_download``; ``rev`` may be a commit oid.
* ``HEAD/GET /{repo}/resolve/{rev}/{path}``: file bytes, with ``X-Repo-Commit`` and ``ETag``; 404
  with ``X-Error-Code: EntryNotFound`` / ``RepoNotFound`` / ``RevisionNotFound`` when missing.

Anything else answers 404 (huggingface_hub tolerates that for its optional calls). ``fail`` maps
a route name (``"create"``, ``"preupload"``, ``"commit"``, ...) to a status code the handler
returns instead, to test failed uploads. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import unquote

import httpx2
import yaml

HOST = "huggingface.co"


@dataclass
class Recorded:
    """One request as the handler saw it."""

    method: str
    route: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeHub:
    """Repos live in ``repos[repo_id][revision] = {path: bytes}``; ``private[repo_id]`` is the visibility."""

    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    private: dict[str, bool] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    discussions: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    # ---------------------------------------------------------------- helpers
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id][revision]

    def routes(self) -> list[str]:
        return [r.route for r in self.requests]

    @staticmethod
    def _oid(revision_files: dict[str, bytes]) -> str:
        digest = hashlib.sha1()
        for path in sorted(revision_files):
            digest.update(path.encode() + b"\0" + revision_files[path])
        return digest.hexdigest()

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
        return httpx2.Response(status, json=payload, headers=headers or {})

    def _error(self, status: int, message: str, code: str | None = None) -> httpx2.Response:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        return httpx2.Response(status, json={"error": message}, headers=headers)

    # ---------------------------------------------------------------- routing
    _ROUTES = [
        ("create", "POST", re.compile(r"^/api/repos/create$")),
        ("validate-yaml", "POST", re.compile(r"^/api/validate-yaml$")),
        ("branch", "POST", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>.+)$")),
        ("preupload", "POST", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>.+)$")),
        ("commit", "POST", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>.+)$")),
        ("discussion", "POST", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/discussions$")),
        ("discussion-details", "GET", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/discussions/(?P<num>\d+)$")),
        ("tree", "GET", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+(?:/pr/\d+)?)$")),
        ("info", "GET", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>.+)$")),
        ("resolve", "HEAD|GET", re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+(?:/pr/\d+)?)/(?P<file>.+)$")),
    ]

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host != HOST:
            return self._error(404, f"fake hub only serves {HOST}, not {request.url.host}")
        path = unquote(request.url.path)
        body = request.read()
        route, match = "unknown", None
        for name, methods, pattern in self._ROUTES:
            m = pattern.match(path)
            if m and request.method in methods.split("|"):
                route, match = name, m
                break
        self.requests.append(Recorded(request.method, route, path, dict(request.url.params),
                                      dict(request.headers), body))
        if route in self.fail:
            return self._error(self.fail[route], f"fake hub: {route} failed on purpose")
        if match is None:
            return self._error(404, f"fake hub: no route for {request.method} {path}")
        groups = {k: unquote(v) for k, v in match.groupdict().items()}
        return getattr(self, "_" + route.replace("-", "_"))(request, body, **groups)

    # ---------------------------------------------------------------- routes
    def _create(self, request, body, **_):
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"https://{HOST}/{repo_id}"
        if repo_id in self.repos:
            return self._error(409, "You already created this model repo")
        self.repos[repo_id] = {"main": {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}}
        self.private[repo_id] = payload.get("visibility") == "private" or bool(payload.get("private"))
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, request, body, **_):
        content = json.loads(body)["content"]
        m = re.match(r"^---\n(.*?)\n---", content, re.S)
        if m is None:
            return self._json(200, {"warnings": [{"message": "empty or missing yaml metadata"}], "errors": []})
        try:
            data = yaml.safe_load(m.group(1))
        except yaml.YAMLError as exc:
            return self._json(400, {"errors": [{"message": str(exc)}], "warnings": []})
        if not isinstance(data, dict):
            return self._json(400, {"errors": [{"message": "metadata is not a mapping"}], "warnings": []})
        return self._json(200, {"errors": [], "warnings": []})

    def _branch(self, request, body, repo, rev):
        if repo not in self.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        if rev in self.repos[repo]:
            return self._error(409, f"branch {rev} already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        self.repos[repo][rev] = dict(self.repos[repo][start])
        return self._json(200, {})

    def _preupload(self, request, body, repo, rev):
        if repo not in self.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        files = json.loads(body)["files"]
        return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})

    def _commit(self, request, body, repo, rev):
        if repo not in self.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        if rev not in self.repos[repo]:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        create_pr = request.url.params.get("create_pr") == "1"
        target = rev
        if create_pr:
            target = self._new_pr_ref(repo, rev)
        files = self.repos[repo][target]
        added, deleted = [], []
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                raw = value["content"]
                files[value["path"]] = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                added.append(value["path"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
                deleted.append(value["path"])
            elif item["key"] == "lfsFile":
                return self._error(400, "fake hub: LFS uploads are not implemented (preupload says 'regular')")
        oid = self._oid(files)
        self.commits.append({"repo": repo, "revision": target, "summary": header.get("summary"),
                             "description": header.get("description"), "added": added, "deleted": deleted,
                             "create_pr": create_pr, "oid": oid})
        out = {"commitUrl": f"https://{HOST}/{repo}/commit/{oid}", "commitOid": oid}
        if create_pr:
            out["pullRequestUrl"] = f"https://{HOST}/{repo}/discussions/{target.rsplit('/', 1)[-1]}"
        return self._json(200, out)

    def _new_pr_ref(self, repo: str, base: str = "main") -> str:
        number = 1 + sum(1 for r in self.repos[repo] if r.startswith("refs/pr/"))
        ref = f"refs/pr/{number}"
        self.repos[repo][ref] = dict(self.repos[repo][base])
        self.discussions[(repo, number)] = {"title": "", "description": None}
        return ref

    def _discussion(self, request, body, repo):
        if repo not in self.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        payload = json.loads(body)
        if not payload.get("pullRequest"):
            return self._error(400, "fake hub: only pull requests are implemented")
        ref = self._new_pr_ref(repo)
        number = int(ref.rsplit("/", 1)[-1])
        self.discussions[(repo, number)] = {"title": payload["title"], "description": payload.get("description")}
        return self._json(200, {"num": number})

    def _discussion_details(self, request, body, repo, num):
        info = self.discussions.get((repo, int(num)))
        if info is None:
            return self._error(404, "Discussion not found")
        return self._json(200, {
            "title": info.get("title", ""), "num": int(num), "author": {"name": "fake"},
            "createdAt": "2026-01-01T00:00:00.000Z", "status": "draft", "repo": {"name": repo, "type": "model"},
            "isPullRequest": True, "events": [], "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [],
        })

    def _lookup(self, repo: str, rev: str) -> dict[str, bytes] | httpx2.Response:
        """The files of `rev` (a branch, a `refs/pr/N` or a commit oid) or the 404 response."""
        if repo not in self.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        if rev in self.repos[repo]:
            return self.repos[repo][rev]
        for files in self.repos[repo].values():
            if self._oid(files) == rev:
                return files
        return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _tree(self, request, body, repo, rev):
        files = self._lookup(repo, rev)
        if isinstance(files, httpx2.Response):
            return files
        return self._json(200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                for p, b in sorted(files.items())])

    def _info(self, request, body, repo, rev):
        files = self._lookup(repo, rev)
        if isinstance(files, httpx2.Response):
            return files
        return self._json(200, {"id": repo, "modelId": repo, "sha": self._oid(files), "private": self.private[repo],
                                "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _resolve(self, request, body, repo, rev, file):
        files = self._lookup(repo, rev)
        if isinstance(files, httpx2.Response):
            return files
        commit = self._oid(files)
        if file not in files:
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit,
                                                 "X-Error-Message": "Entry not found"})
        data = files[file]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return httpx2.Response(200, content=b"" if request.method == "HEAD" else data, headers=headers)

    # ---------------------------------------------------------------- install
    @contextlib.contextmanager
    def install(self, cache_dir: str | None = None) -> Iterator[FakeHub]:
        """Route huggingface_hub's HTTP client to this fake Hub (offline mode lifted meanwhile).

        `cache_dir`: where downloads are cached meanwhile (default: a new temporary folder, so tests never
        touch the user's Hub cache).
        """
        import tempfile

        from huggingface_hub import constants, set_client_factory
        from huggingface_hub.utils._http import default_client_factory

        offline, cache = constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE
        constants.HF_HUB_OFFLINE = False
        constants.HF_HUB_CACHE = cache_dir or tempfile.mkdtemp(prefix="fake_hub_cache_")
        set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(self.handler),
                                                 follow_redirects=True, timeout=None))
        try:
            yield self
        finally:
            set_client_factory(default_client_factory)
            constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = offline, cache


__all__ = ["FakeHub", "Recorded"]
