"""Offline signing of provenance: DSSE envelopes with ed25519 keys the user supplies, and cosign-style
attestations next to an image in a registry (docs/provenance.md).

`sign` wraps a statement (provenance.dumps) in a DSSE envelope (payloadType application/vnd.in-toto+json)
signed through securesystemslib; `verify` checks one against a public key and returns the statement.
`attach` pushes an envelope as a layer of the OCI manifest tagged `<repo>:sha256-<hex>.att` (cosign's
convention) with skopeo, so registry credentials come from the docker config like `docker push`'s;
`fetch_attached` reads them back.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from securesystemslib import exceptions as sslib_errors
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]  # public, not re-exported

from istiobuild import dockerapi, grammar, provenance
from istiobuild.errors import IstiobuildError, SourceError, UsageError
from istiobuild.run import Result, run
from istiobuild.secrets import register_secret

PAYLOAD_TYPE = provenance.PAYLOAD_TYPE
ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
PASSWORD_ENV = "ISTIOBUILD_SIGNING_PASSWORD"  # noqa: S105 (the variable's name)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"  # empty for attestations, as cosign writes it
_MAX_KEY_BYTES = 64 * 1024
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_LAYOUT_TAG = "att"


class VerificationError(IstiobuildError):
    """An envelope does not verify: not an envelope, wrong payloadType, another key, a modified payload."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------
# Keys


def _read_key_file(path: Path, what: str, *, private: bool) -> bytes:
    """A regular file's first bytes; a private one is refused (like ssh does) when others may access it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"the {what} {path} is not a regular file")
        data = fh.read(_MAX_KEY_BYTES)
    mode = stat.S_IMODE(info.st_mode)
    if private and b"-----BEGIN PUBLIC KEY-----" in data:
        raise UsageError(f"{path} is a public key: signing needs the private key")
    if private and mode & 0o077:
        why = f"is accessible by group or others (mode {mode:04o})"
        raise UsageError(f"the {what} {path} {why}: run chmod 600 {path}")
    if private and info.st_uid not in (os.getuid(), 0):
        raise UsageError(f"the {what} {path} belongs to another user (uid {info.st_uid}): use a file of yours")
    return data


def _password(key: Path, password_file: Path | None, env: Mapping[str, str]) -> bytes:
    if password_file is not None:
        text = _read_key_file(password_file, "password file", private=True).decode(errors="replace").splitlines()
        password = text[0] if text else ""  # the first line, as openssl's -pass file: reads it
    else:
        password = env.get(PASSWORD_ENV, "")
    if not password:
        raise UsageError(f"the private key {key} is encrypted: give its password in a 0600 file or in {PASSWORD_ENV}")
    register_secret(password)
    return password.encode()


def _private_key(key: Path, password_file: Path | None, env: Mapping[str, str]) -> Ed25519PrivateKey:
    pem = _read_key_file(key, "private key", private=True)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem
    password = _password(key, password_file, env) if encrypted else None
    try:
        loaded = load_pem_private_key(pem, password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise UsageError(f"cannot decrypt the private key {key}: wrong password") from None
        raise UsageError(
            f"{key} is not a PEM PKCS#8 private key (`openssl genpkey -algorithm ed25519 -out KEY` writes one)"
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise UsageError(
            f"{key} is not an ed25519 key: istiobuild signs with ed25519 (openssl genpkey -algorithm ed25519)"
        )
    return loaded


def _public_key(path: Path) -> SSlibKey:
    try:
        loaded = load_pem_public_key(_read_key_file(path, "public key", private=False))
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{path} is not a PEM public key (`openssl pkey -in KEY -pubout` writes one)") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise UsageError(f"{path} is not an ed25519 public key")
    return SSlibKey.from_crypto(loaded)


def key_id(public_key: Path) -> str:
    """The key's id as securesystemslib and in-toto compute it: sha256 of its canonical JSON form."""
    return _public_key(public_key).keyid


# ---------------------------------------------------------------------------------------------
# Signing and verifying


def sign(
    statement: Mapping[str, Any], key: Path, *, password_file: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A DSSE envelope of the (valid) statement, signed with the ed25519 PKCS#8 PEM private key `key`.

    An encrypted key's password comes from `password_file` (0600, first line) or ISTIOBUILD_SIGNING_PASSWORD
    in `env` (default os.environ); it is registered as a secret (masked everywhere, never in argv).
    """
    provenance.validate(statement)
    private = _private_key(key, password_file, os.environ if env is None else env)
    signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
    envelope = Envelope(provenance.dumps(statement), PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return envelope.to_dict()


def unsigned(statement: Mapping[str, Any]) -> dict[str, Any]:
    """A DSSE envelope of the (valid) statement without a signature: what a build without a signing key attaches
    next to its images (a claim, like a label; `verify` refuses it, `invoke manifest --key` too)."""
    provenance.validate(statement)
    payload = base64.b64encode(provenance.dumps(statement)).decode()
    return {"payload": payload, "payloadType": PAYLOAD_TYPE, "signatures": []}


def _shape_problem(data: Any, *, signed: bool = True) -> str | None:
    """Why `data` is not a DSSE JSON envelope (with a signature unless `signed` is False), or None."""
    if not isinstance(data, Mapping):
        return f"a JSON object is expected, not {type(data).__name__}"
    missing = [k for k in ("payload", "payloadType", "signatures") if k not in data]
    unknown = sorted(set(data) - {"payload", "payloadType", "signatures"})
    if missing or unknown:
        return f"no {missing[0]}" if missing else f"unknown field {unknown[0]!r}"
    if not (isinstance(data["payload"], str) and isinstance(data["payloadType"], str)):
        return "payload and payloadType must be strings"
    sigs = data["signatures"]
    if not isinstance(sigs, list) or (signed and not sigs):
        return "signatures must be a non-empty list" if isinstance(sigs, list) else "signatures must be a list"
    good = (
        isinstance(x, Mapping) and isinstance(x.get("sig"), str) and isinstance(x.get("keyid", ""), str) for x in sigs
    )
    return None if all(good) else "each signature must have a sig and a keyid, strings"


def _envelope(data: Any) -> Envelope:
    """The securesystemslib Envelope of a DSSE JSON envelope; VerificationError when it is none."""
    problem = _shape_problem(data)
    if problem:
        raise VerificationError(f"not a DSSE envelope: {problem}")
    if data["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError(f"wrong payloadType {data['payloadType']!r}: an in-toto statement is {PAYLOAD_TYPE!r}")
    try:
        return Envelope.from_dict(copy.deepcopy(dict(data)))  # from_dict rewrites the signatures it reads
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"not a DSSE envelope: {exc}") from None


def verify(envelope: Mapping[str, Any], public_key: Path) -> dict[str, Any]:
    """The statement inside `envelope` once its signature by `public_key` verifies (securesystemslib's DSSE
    verifier over the pre-authentication encoding); VerificationError saying why not.

    A signature without a keyid (as cosign writes them) is checked against the key too.
    """
    if isinstance(envelope, Mapping) and envelope.get("signatures") == []:
        raise VerificationError(f"the envelope is unsigned: nothing to check with {public_key}")
    env = _envelope(envelope)
    key = _public_key(public_key)
    if key.keyid in env.signatures:
        candidate = key
    elif "" in env.signatures:
        candidate = SSlibKey("", key.keytype, key.scheme, key.keyval)
    else:
        ids = ", ".join(sorted(env.signatures))
        raise VerificationError(f"signed by key {ids}, not by {public_key} (key {key.keyid}): wrong key")
    try:
        env.verify([candidate], 1)
    except sslib_errors.VerificationError:
        if not candidate.keyid:  # an anonymous signature: another key is as likely as a modification
            raise VerificationError(f"no signature verifies with {public_key}: wrong key, or modified") from None
        raise VerificationError(
            f"the signature by key {key.keyid} does not verify: the payload or the signature was modified"
        ) from None
    try:
        statement: dict[str, Any] = json.loads(env.payload)
        provenance.validate(statement)
    except ValueError as exc:  # JSONDecodeError is one
        raise VerificationError(f"the signed payload is not a valid provenance statement: {exc}") from None
    return statement


# ---------------------------------------------------------------------------------------------
# Attestations next to an image in a registry (cosign's tag convention)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Layer:
    media_type: str
    data: bytes
    annotations: Mapping[str, str]


def attestation_tag(manifest_digest: str) -> str:
    """cosign's tag for the attestations of an image manifest: sha256-<hex>.att."""
    match = _DIGEST.fullmatch(manifest_digest)
    if not match:
        raise UsageError(
            f"{manifest_digest!r} is not a manifest digest: it must be sha256: and 64 lower-case hex digits"
        )
    return f"sha256-{match.group(1)}.att"


def attach(
    envelope: Mapping[str, Any],
    image_repo: str,
    manifest_digest: str,
    *,
    insecure: bool,
    scratch: Path,
    log: Path | None,
) -> str:
    """Push `envelope` as an attestation of image_repo@manifest_digest and return the .att reference.

    Like `cosign attest`, envelopes already attached stay (an identical one is not added twice). Plain
    HTTP only with `insecure` or for localhost / 127.x, as `invoke manifest` decides; else TLS, verified.
    """
    ref = f"{_repository(image_repo)}:{attestation_tag(manifest_digest)}"
    data = _envelope_bytes(envelope)
    plain = _plain_http(image_repo, insecure)
    work = _workspace(scratch)
    try:
        _skopeo(["inspect", "--raw", _tls("", plain), "--", f"docker://{image_repo}@{manifest_digest}"], work, log)
        layers = _pull(ref, plain, work, log)
        if data not in (layer.data for layer in layers):
            annotations = {"predicateType": _predicate_type(envelope), COSIGN_SIGNATURE_ANNOTATION: ""}
            layers.append(_Layer(media_type=ENVELOPE_MEDIA_TYPE, data=data, annotations=annotations))
            layout = _write_layout(work / "push", layers)
            args = ["copy", "--preserve-digests", _tls("dest", plain), "--", f"oci:{layout}:{_LAYOUT_TAG}"]
            _skopeo([*args, f"docker://{ref}"], work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ref


def fetch_attached(image_repo: str, manifest_digest: str, *, insecure: bool, scratch: Path) -> list[dict[str, Any]]:
    """The DSSE envelopes attached to image_repo@manifest_digest (none: an empty list)."""
    ref = f"{_repository(image_repo)}:{attestation_tag(manifest_digest)}"
    work = _workspace(scratch)
    try:
        layers = _pull(ref, _plain_http(image_repo, insecure), work, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    envelopes = []
    for layer in layers:
        if layer.media_type == ENVELOPE_MEDIA_TYPE:
            try:
                envelopes.append(json.loads(layer.data))
            except ValueError:
                raise SourceError(f"{ref} has a DSSE layer that is not JSON") from None
    return envelopes


def _repository(image_repo: str) -> str:
    grammar.check_image_reference(image_repo, "image repository")
    if "@" in image_repo or ":" in image_repo.rsplit("/", 1)[-1]:
        raise UsageError(f"image repository {image_repo!r} has a tag or digest: give the repository only")
    return image_repo


def _plain_http(image_repo: str, insecure: bool) -> bool:
    host = image_repo.split("/", 1)[0].rsplit(":", 1)[0] if "/" in image_repo else ""
    return insecure or host == "localhost" or host.startswith("127.")


def _tls(side: str, plain: bool) -> str:
    return f"--{side + '-' if side else ''}tls-verify={'false' if plain else 'true'}"


def _workspace(scratch: Path) -> Path:
    if ":" in str(scratch):
        raise UsageError(f"scratch directory {scratch} contains ':', which skopeo's oci: transport cannot take")
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="att-", dir=scratch))
    # our own policy: skopeo checks no signatures here (we verify DSSE ourselves), whatever the host's says
    (work / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    return work


def _envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    problem = _shape_problem(envelope, signed=False)
    if problem:
        raise VerificationError(f"not a DSSE envelope: {problem}")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError(
            f"wrong payloadType {envelope['payloadType']!r}: an in-toto statement is {PAYLOAD_TYPE!r}"
        )
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


def _predicate_type(envelope: Mapping[str, Any]) -> str:
    try:
        statement = json.loads(base64.b64decode(envelope["payload"]))
        predicate_type = statement["predicateType"]
    except (ValueError, KeyError, TypeError):
        raise VerificationError("the envelope's payload is not an in-toto statement") from None
    if not isinstance(predicate_type, str):
        raise VerificationError("the envelope's statement has no predicateType")
    return predicate_type


def _skopeo(args: Sequence[str], work: Path, log: Path | None, *, missing_ok: bool = False) -> Result | None:
    """Run skopeo with our policy; a failure is one line naming why (None: `missing_ok` and no such manifest)."""
    argv = ["skopeo", "--policy", str(work / "policy.json"), *args]
    result = run(argv, log=log, capture=True, check=False, what="push or fetch provenance attestations")
    if result.returncode == 0:
        return result
    lines = [m.group(1) for m in (re.search(r'msg="(.*)"', t) for t in result.tail) if m] or list(result.tail[-1:])
    reason = lines[-1] if lines else f"exit {result.returncode}"
    lowered = reason.lower()
    if missing_ok and "manifest unknown" in lowered:
        return None
    target = args[-1].removeprefix("docker://")
    problem = dockerapi.registry_problem(reason)
    if problem == "not authorized":
        raise SourceError(f"the registry refused {target}: not authorized", hint=_HINT, log=log)
    if problem:
        raise SourceError(f"the registry of {target} is not reachable", hint=_HINT, log=log)
    if "manifest unknown" in lowered:
        raise SourceError(f"{target} does not exist in the registry: push the image first", log=log)
    raise SourceError(f"skopeo {args[0]} {target} failed: {reason[:300]}", log=log)


_HINT = "check that the registry runs and `docker login <registry>` (skopeo reads the same credentials)"


def _pull(ref: str, plain: bool, work: Path, log: Path | None) -> list[_Layer]:
    """The layers of the manifest at `ref` (none when there is no such tag)."""
    layout = work / "pull"
    args = ["copy", _tls("src", plain), "--", f"docker://{ref}", f"oci:{layout}:{_LAYOUT_TAG}"]
    if _skopeo(args, work, log, missing_ok=True) is None:
        return []
    try:
        index = json.loads((layout / "index.json").read_bytes())
        manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
        return [
            _Layer(media_type=d["mediaType"], data=_blob(layout, d["digest"]), annotations=d.get("annotations", {}))
            for d in manifest["layers"]
        ]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise SourceError(f"the attestation manifest {ref} is not one skopeo could read back: {exc}") from None


def _blob(layout: Path, digest: str) -> bytes:
    match = _DIGEST.fullmatch(digest)
    if not match:
        raise ValueError(f"unsupported digest {digest!r}")
    data = (layout / "blobs" / "sha256" / match.group(1)).read_bytes()
    if hashlib.sha256(data).hexdigest() != match.group(1):
        raise ValueError(f"blob {digest} does not match its digest")
    return data


def _write_layout(layout: Path, layers: Sequence[_Layer]) -> Path:
    """An OCI image layout with one manifest (tag `att`) holding `layers`, cosign-shaped; returns `layout`."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    descriptors = [{"mediaType": x.media_type, **put(x.data), "annotations": dict(x.annotations)} for x in layers]
    rootfs = {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]}
    config = {"architecture": "", "os": "", "config": {}, "rootfs": rootfs}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **put(_canonical(config))},
        "layers": descriptors,
    }
    entry = {"mediaType": OCI_MANIFEST, **put(_canonical(manifest))}
    entry["annotations"] = {"org.opencontainers.image.ref.name": _LAYOUT_TAG}
    (layout / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(_canonical({"schemaVersion": 2, "manifests": [entry]}))
    return layout


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
