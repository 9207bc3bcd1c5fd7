"""Kaggle's submission, dataset, kernel and blob endpoints, served from inside urllib3: the kaggle package runs
unchanged above it.

`FakeKaggle.install(monkeypatch)` replaces `HTTPConnectionPool.urlopen` (the call that would open a
socket) and blocks sockets outright, so any request that escapes the double fails the test.
"""
from __future__ import annotations

import io
import json
import socket
from datetime import datetime, timezone

import urllib3
from urllib3.connectionpool import HTTPConnectionPool

ROOT = "https://api.kaggle.com/v1/"
API = ROOT + "competitions.CompetitionApiService/"
UPLOAD = "https://www.kaggleusercontent.com/upload/"


class FakeKaggle:
    def __init__(self, competitions=("kit-demo",)):
        self.competitions = set(competitions)
        self.requests: list[dict] = []  # every request that reached the "network"
        self.blobs: dict[str, bytes | None] = {}
        self.names: dict[str, str] = {}  # upload token -> the file name the client announced
        self.submissions: list[dict] = []  # newest last
        self.upload_status = 200  # what the storage PUT answers (403: the upload fails)
        self.create_error: tuple[int, str] | None = None  # (HTTP code, message) for CreateSubmission
        self.list_error: tuple[int, str] | None = None  # (HTTP code, message) for ListSubmissions
        self.scorer = None  # bytes -> (public, private), called on CreateSubmission
        self.next_ref = 40001
        self.datasets: dict[str, list[dict]] = {}  # owner/slug -> versions, each {file name: bytes}
        self.kernels: dict[str, list[dict]] = {}  # owner/slug -> versions, each the SaveKernel request
        self.kernel_error = ""  # what SaveKernel answers in its error field (a refused push)
        self.daily_cap = 5  # Kaggle's own daily submission limit for this team
        self.limits_error: tuple[int, str] | None = None  # (HTTP code, message) for GetSubmissionLimits

    def install(self, monkeypatch) -> "FakeKaggle":
        fake = self

        def urlopen(pool, method, url, body=None, headers=None, **kw):
            port = f":{pool.port}" if pool.port and pool.port not in (80, 443) else ""
            return fake.handle(method, f"{pool.scheme}://{pool.host}{port}{url}", _read(body), dict(headers or {}))

        def no_socket(*a, **k):
            raise AssertionError("a real network connection was attempted")

        monkeypatch.setattr(HTTPConnectionPool, "urlopen", urlopen)
        monkeypatch.setattr(socket.socket, "connect", no_socket)
        return self

    def handle(self, method: str, url: str, body: bytes, headers: dict) -> urllib3.HTTPResponse:
        self.requests.append({"method": method, "url": url, "body": body, "headers": headers})
        if url.startswith(API):
            return self._api(url[len(API):], json.loads(body or b"{}"))
        if url.startswith(ROOT):
            return self._other(url[len(ROOT):], json.loads(body or b"{}"))
        if url.startswith(UPLOAD) and method == "PUT":
            token = url[len(UPLOAD):]
            if self.upload_status != 200:
                return _response(self.upload_status, {"error": "upload refused"})
            self.blobs[token] = body
            return _response(200, {})
        return _response(404, {"code": 404, "message": f"no route {method} {url}"})

    def _api(self, name: str, req: dict) -> urllib3.HTTPResponse:
        comp = req.get("competitionName")
        if comp not in self.competitions:
            return _response(404, {"code": 404, "message": f"Competition {comp} not found"})
        if name == "StartSubmissionUpload":
            token = f"blob{len(self.blobs) + 1}"
            self.blobs[token] = None
            self.names[token] = req.get("fileName", "")
            return _response(200, {"token": token, "createUrl": UPLOAD + token})
        if name == "CreateSubmission":
            if self.create_error:
                code, message = self.create_error
                return _response(code, {"code": code, "message": message})
            data = self.blobs.get(req.get("blobFileTokens"))
            if data is None:
                return _response(400, {"code": 400, "message": "blob was never uploaded"})
            ref, self.next_ref = self.next_ref, self.next_ref + 1
            self.submissions.append({"ref": ref, "data": data, "file_name": self.names[req["blobFileTokens"]],
                                     "description": req.get("submissionDescription", ""), "status": "PENDING",
                                     "date": datetime.now(timezone.utc)})
            return _response(200, {"message": f"Successfully submitted to {comp}", "ref": ref})
        if name == "CreateCodeSubmission":
            kernel = f"{req.get('kernelOwner') or req.get('_kernelOwner')}/{req.get('kernelSlug')}"
            versions = self.kernels.get(kernel, [])
            if not versions or req.get("kernelVersion", len(versions)) > len(versions):
                return _response(404, {"code": 404, "message": f"Notebook {kernel} version not found"})
            ref, self.next_ref = self.next_ref, self.next_ref + 1
            self.submissions.append({"ref": ref, "data": None, "file_name": req.get("fileName", ""), "kernel": kernel,
                                     "kernel_version": req.get("kernelVersion"), "status": "PENDING",
                                     "description": req.get("submissionDescription", ""),
                                     "date": datetime.now(timezone.utc)})
            return _response(200, {"message": "Your submission was successfully saved", "ref": ref})
        if name == "ListSubmissions":
            if self.list_error:
                code, message = self.list_error
                return _response(code, {"code": code, "message": message})
            listed = [_listed(s) for s in reversed(self.submissions)]
            size = req.get("pageSize") or 20
            start = (int(req.get("page") or 1) - 1) * size
            return _response(200, {"submissions": listed[start:start + size]})
        if name == "GetSubmissionLimits":
            if self.limits_error:
                code, message = self.limits_error
                return _response(code, {"code": code, "message": message})
            today = datetime.now(timezone.utc).date()
            used = sum(1 for s in self.submissions if s["date"].date() == today)
            return _response(200, {"numToday": used, "numTotal": len(self.submissions),
                                   "numAllowedNow": max(0, self.daily_cap - used), "limitedByTotal": False})
        return _response(404, {"code": 404, "message": f"unknown method {name}"})

    def _other(self, name: str, req: dict) -> urllib3.HTTPResponse:
        """Blob uploads, datasets and kernels."""
        if name == "blobs.BlobApiService/StartBlobUpload":
            token = f"blob{len(self.blobs) + 1}"
            self.blobs[token], self.names[token] = None, req.get("name", "")
            return _response(200, {"token": token, "createUrl": UPLOAD + token})
        service, _, method = name.partition("/")
        ref = f"{req.get('ownerSlug')}/{req.get('datasetSlug') or req.get('slug')}"
        if service == "datasets.DatasetApiService":
            if method in ("GetDatasetStatus", "GetDataset"):
                if ref not in self.datasets:
                    return _response(404, {"code": 404, "message": f"Dataset {ref} not found"})
                return _response(200, {"status": "READY"} if method == "GetDatasetStatus" else
                                 {"ref": ref, "currentVersionNumber": len(self.datasets[ref])})
            if method in ("CreateDataset", "CreateDatasetVersion"):
                if (method == "CreateDataset") == (ref in self.datasets):
                    return _response(200, {"status": "error", "error": f"dataset {ref}: exists" if ref in self.datasets
                                           else f"dataset {ref}: not found"})
                files = (req if method == "CreateDataset" else req.get("body", {})).get("files", [])
                if any(self.blobs.get(f.get("token")) is None for f in files):
                    return _response(400, {"code": 400, "message": "a file was never uploaded"})
                self.datasets.setdefault(ref, []).append({self.names[f["token"]]: self.blobs[f["token"]] for f in files})
                return _response(200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"})
        if name == "kernels.KernelsApiService/SaveKernel":
            missing = [d for d in req.get("datasetDataSources", []) if d not in self.datasets]
            if self.kernel_error or missing:
                return _response(200, {"error": self.kernel_error or f"dataset sources not found: {missing}"})
            self.kernels.setdefault(req["slug"], []).append(req)
            n = len(self.kernels[req["slug"]])
            return _response(200, {"ref": f"/code/{req['slug']}", "url": f"https://www.kaggle.com/code/{req['slug']}",
                                   "versionNumber": n})
        return _response(404, {"code": 404, "message": f"unknown method {name}"})

    def upload_elsewhere(self, description: str = "from the website", when: datetime | None = None) -> int:
        """A submission this ledger never saw: made on kaggle.com or by a teammate."""
        ref, self.next_ref = self.next_ref, self.next_ref + 1
        self.submissions.append({"ref": ref, "data": b"", "file_name": "submission.csv", "description": description,
                                 "status": "COMPLETE", "date": when or datetime.now(timezone.utc)})
        return ref

    def finish(self, ref: int, public: float | None = None, private: float | None = None, error: str = "") -> None:
        """Kaggle finished scoring submission `ref` (or failed to, with `error`)."""
        s = next(s for s in self.submissions if s["ref"] == ref)
        s.update(status="ERROR" if error else "COMPLETE", public=public, private=private, error=error)


def _listed(s: dict) -> dict:
    out = {"ref": s["ref"], "date": s["date"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "description": s["description"],
           "fileName": s["file_name"], "status": s["status"], "submittedBy": "kit-user"}
    if s.get("public") is not None:
        out["publicScore"] = f"{s['public']:.5f}"
    if s.get("private") is not None:
        out["privateScore"] = f"{s['private']:.5f}"
    if s.get("error"):
        out["errorDescription"] = s["error"]
    return out


def _read(body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data = body.read()
        return data.encode() if isinstance(data, str) else data
    return b"".join(c.encode() if isinstance(c, str) else c for c in body)


def _response(status: int, payload: dict) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(body=io.BytesIO(json.dumps(payload).encode()), status=status, reason="",
                                headers={"Content-Type": "application/json"}, preload_content=False,
                                decode_content=False)
