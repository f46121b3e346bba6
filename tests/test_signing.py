"""Signing provenance offline: ed25519 keys made by the openssl CLI, DSSE envelopes checked against the DSSE
spec (PAE verified by openssl itself), securesystemslib's and in-toto's verifiers; what verification refuses;
attestations attached next to a real pushed image in a real registry (Debian's docker-registry) with skopeo."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from in_toto.exceptions import SignatureVerificationError
from in_toto.models.metadata import Envelope as InTotoEnvelope
from in_toto.models.metadata import Metadata
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from helpers import keypair
from istiobuild import provenance, signing
from istiobuild.errors import IstiobuildError, SourceError, UsageError
from istiobuild.provenance import Subject
from istiobuild.secrets import forget_secrets, registered_secrets
from istiobuild.signing import VerificationError
from test_images import free_port, start_registry

NOW = dt.datetime(2024, 5, 1, 10, 0, 0, tzinfo=dt.timezone.utc)
EXTERNAL = {"release": "1.5.0", "arch": "x86_64", "toolchain": "gcc", "pageSize": "4k", "hub": "h", "tag": "t"}


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    (d / "password").write_text("correct horse battery\n")
    (d / "password").chmod(0o600)
    key, pub = keypair(d, "signer")
    other_key, other_pub = keypair(d, "other")
    enc_key, enc_pub = keypair(d, "encrypted", d / "password")
    return {"key": key, "pub": pub, "other": other_pub, "other_key": other_key, "enc": enc_key, "enc_pub": enc_pub}


def statement(name: str = "envoy", digest: str = "a" * 64) -> dict[str, Any]:
    return provenance.statement(
        subjects=[Subject(name=name, digest={"sha256": digest})],
        external=EXTERNAL,
        internal={},
        dependencies=[provenance.tool_dependency("gcc", "12.2.0")],
        builder_id="https://istiobuild.github.io/builders/local/v1",
        builder_version={"istiobuild": "0.1.0"},
        invocation_id="test",
        started=NOW,
        finished=NOW,
    )


@pytest.fixture(scope="module")
def signed(keys: dict[str, Path]) -> dict[str, Any]:
    return signing.sign(statement(), keys["key"])


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding, written from the spec."""
    kind = payload_type.encode()
    return b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" " + str(len(payload)).encode() + b" " + payload


def test_the_envelope_is_dsse_and_openssl_verifies_its_signature(
    keys: dict[str, Path], signed: dict[str, Any], tmp_path: Path
) -> None:
    assert set(signed) == {"payload", "payloadType", "signatures"}
    assert signed["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(signed["payload"], validate=True)
    assert payload == provenance.dumps(statement())
    [sig] = signed["signatures"]
    assert sig["keyid"] == signing.key_id(keys["pub"])
    (tmp_path / "pae").write_bytes(pae(signed["payloadType"], payload))
    (tmp_path / "sig").write_bytes(base64.b64decode(sig["sig"]))
    # another implementation of ed25519 (OpenSSL's), over the PAE as the spec defines it
    args = ["-in", str(tmp_path / "pae"), "-sigfile", str(tmp_path / "sig")]
    openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(keys["pub"]), "-rawin", *args)
    with pytest.raises(subprocess.CalledProcessError):
        openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(keys["other"]), "-rawin", *args)


def test_securesystemslib_and_in_toto_verify_the_envelope(keys: dict[str, Path], signed: dict[str, Any]) -> None:
    key = SSlibKey.from_crypto(load_pem_public_key(keys["pub"].read_bytes()))
    assert set(Envelope.from_dict(json.loads(json.dumps(signed))).verify([key], 1)) == {key.keyid}
    metadata = Metadata.from_dict(json.loads(json.dumps(signed)))
    assert isinstance(metadata, InTotoEnvelope)
    metadata.verify_signature({"keyid": key.keyid, **key.to_dict()})
    other = SSlibKey.from_crypto(load_pem_public_key(keys["other"].read_bytes()))
    with pytest.raises(SignatureVerificationError):
        metadata.verify_signature({"keyid": other.keyid, **other.to_dict()})


def test_verify_returns_the_statement(keys: dict[str, Path], signed: dict[str, Any]) -> None:
    assert signing.verify(signed, keys["pub"]) == statement()
    # a signature without keyid, as cosign writes them, is checked against the key as well
    anonymous = {**signed, "signatures": [{"keyid": "", "sig": signed["signatures"][0]["sig"]}]}
    assert signing.verify(anonymous, keys["pub"]) == statement()
    with pytest.raises(VerificationError, match="no signature verifies with .*: wrong key, or modified"):
        signing.verify(anonymous, keys["other"])


def reencoded(envelope: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    return {**envelope, "payload": base64.b64encode(provenance.dumps(doc)).decode()}


def test_verification_fails_with_a_wrong_key(keys: dict[str, Path], signed: dict[str, Any]) -> None:
    with pytest.raises(VerificationError, match="wrong key") as info:
        signing.verify(signed, keys["other"])
    assert isinstance(info.value, IstiobuildError) and info.value.exit_code == 1
    assert signing.key_id(keys["other"]) in info.value.message
    # the same keyid cannot make another key's signature pass
    forged = signing.sign(statement(), keys["other_key"])
    forged["signatures"][0]["keyid"] = signing.key_id(keys["pub"])
    with pytest.raises(VerificationError, match="was modified"):
        signing.verify(forged, keys["pub"])


def test_verification_fails_with_a_modified_payload(keys: dict[str, Path], signed: dict[str, Any]) -> None:
    changed = reencoded(signed, statement(digest="b" * 64))
    with pytest.raises(VerificationError, match="the payload or the signature was modified"):
        signing.verify(changed, keys["pub"])
    # even a change that leaves the JSON equal (white space) breaks the signature: DSSE signs bytes
    spaced = {**signed, "payload": base64.b64encode(base64.b64decode(signed["payload"]) + b" ").decode()}
    with pytest.raises(VerificationError, match="modified"):
        signing.verify(spaced, keys["pub"])


def test_verification_fails_with_a_modified_signature(keys: dict[str, Path], signed: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(signed["signatures"][0]["sig"]))
    raw[7] ^= 0x01
    changed = {**signed, "signatures": [{**signed["signatures"][0], "sig": base64.b64encode(bytes(raw)).decode()}]}
    with pytest.raises(VerificationError, match="modified"):
        signing.verify(changed, keys["pub"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"payloadType": "application/vnd.dsse+json"}, "wrong payloadType 'application/vnd.dsse\\+json'"),
        ({"payloadType": "text/plain"}, "wrong payloadType"),
        ({"signatures": []}, "the envelope is unsigned: nothing to check with"),
        ({"signatures": {}}, "not a DSSE envelope: signatures must be a list"),
        ({"signatures": "abc"}, "not a DSSE envelope"),
        ({"signatures": [{"keyid": "x"}]}, "each signature must have a sig"),
        ({"signatures": [{"sig": "%%%", "keyid": "x"}]}, "not a DSSE envelope"),
        ({"payload": 7}, "payload and payloadType must be strings"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_verification_fails_for_what_is_not_our_envelope(
    keys: dict[str, Path], signed: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        signing.verify({**signed, **change}, keys["pub"])


def test_verification_fails_for_no_envelope_at_all(keys: dict[str, Path], signed: dict[str, Any]) -> None:
    for data in ([signed], "envelope", {"payload": signed["payload"]}, statement()):
        with pytest.raises(VerificationError, match="not a DSSE envelope"):
            signing.verify(data, keys["pub"])  # type: ignore[arg-type]


def test_a_signed_payload_that_is_not_provenance_is_refused(keys: dict[str, Path]) -> None:
    env = Envelope(b'{"_type": "link"}', signing.PAYLOAD_TYPE, {})
    env.sign(CryptoSigner(load_pem_private_key(keys["key"].read_bytes(), None)))
    with pytest.raises(VerificationError, match="not a valid provenance statement"):
        signing.verify(env.to_dict(), keys["pub"])


def test_a_private_key_others_can_read_is_refused(keys: dict[str, Path], tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(keys["key"].read_bytes())
    for mode in (0o640, 0o604, 0o660):
        key.chmod(mode)
        with pytest.raises(UsageError) as info:
            signing.sign(statement(), key)
        line = info.value.render()
        assert (
            line
            == f"error: the private key {key} is accessible by group or others (mode {mode:04o}): run chmod 600 {key}"
        )
    key.chmod(0o400)
    assert signing.verify(signing.sign(statement(), key), keys["pub"]) == statement()


def test_an_encrypted_key_takes_its_password_from_a_private_file_or_the_environment(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    password = keys["enc"].parent / "password"
    try:
        env = signing.sign(statement(), keys["enc"], password_file=password, env={})
        assert signing.verify(env, keys["enc_pub"]) == statement()
        assert "correct horse battery" in registered_secrets()  # masked in every log from now on
        env = signing.sign(statement(), keys["enc"], env={signing.PASSWORD_ENV: "correct horse battery"})
        assert signing.verify(env, keys["enc_pub"]) == statement()
        with pytest.raises(UsageError, match="is encrypted: give its password in a 0600 file or in ISTIOBUILD_SIGNING"):
            signing.sign(statement(), keys["enc"], env={})
        with pytest.raises(UsageError, match="cannot decrypt the private key .*: wrong password"):
            signing.sign(statement(), keys["enc"], env={signing.PASSWORD_ENV: "wrong"})
        loose = tmp_path / "password"
        loose.write_text("correct horse battery\n")
        loose.chmod(0o644)
        with pytest.raises(UsageError, match="the password file .* is accessible by group or others"):
            signing.sign(statement(), keys["enc"], password_file=loose, env={})
    finally:
        forget_secrets()


def test_keys_of_another_kind_or_format_are_refused(keys: dict[str, Path], tmp_path: Path) -> None:
    ec_key = tmp_path / "ec.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(ec_key))
    ec_key.chmod(0o600)
    openssl("pkey", "-in", str(ec_key), "-pubout", "-out", str(tmp_path / "ec.pub"))
    with pytest.raises(UsageError, match="is not an ed25519 key"):
        signing.sign(statement(), ec_key)
    with pytest.raises(UsageError, match="is not an ed25519 public key"):
        signing.key_id(tmp_path / "ec.pub")
    with pytest.raises(UsageError, match="is a public key: signing needs the private key"):
        signing.sign(statement(), keys["pub"])
    (tmp_path / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    (tmp_path / "garbage.pem").chmod(0o600)
    with pytest.raises(UsageError, match="is not a PEM PKCS#8 private key"):
        signing.sign(statement(), tmp_path / "garbage.pem")
    with pytest.raises(UsageError, match="is not a PEM public key"):
        signing.key_id(keys["key"])
    with pytest.raises(UsageError, match="cannot read the public key .*: No such file"):
        signing.key_id(tmp_path / "missing.pub")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UsageError, match="is not a regular file"):
        signing.key_id(tmp_path / "fifo")


def test_sign_refuses_an_invalid_statement(keys: dict[str, Path]) -> None:
    doc = statement()
    doc["predicate"]["runDetails"]["builder"]["name"] = "me"
    with pytest.raises(ValueError, match="unknown field 'name'"):
        signing.sign(doc, keys["key"])


# ---------------------------------------------------------------------------------------------
# Attestations in a registry


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(repository, manifest digest) of a tiny `docker import`ed image pushed to our own registry."""
    tmp = tmp_path_factory.mktemp("registry")
    address, proc = start_registry(tmp)
    repo = f"{address}/prov/tiny"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    try:
        subprocess.run(["docker", "import", "-", f"{repo}:1"], input=data.getvalue(), check=True, capture_output=True)
        subprocess.run(["docker", "push", f"{repo}:1"], check=True, capture_output=True)
        fmt = "{{json .RepoDigests}}"
        digests = subprocess.run(["docker", "inspect", "--format", fmt, f"{repo}:1"], capture_output=True, check=True)
        digest = json.loads(digests.stdout)[0].split("@")[1]
        yield repo, digest
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{repo}:1"], capture_output=True, check=False)
        stop(proc)


def skopeo_raw(ref: str, *creds: str) -> dict[str, Any]:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *creds, f"docker://{ref}"],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.slow
def test_attach_next_to_a_pushed_image_and_fetch_back(
    pushed: tuple[str, str], keys: dict[str, Path], signed: dict[str, Any], tmp_path: Path
) -> None:
    repo, digest = pushed
    assert signing.fetch_attached(repo, digest, insecure=False, scratch=tmp_path) == []
    log = tmp_path / "attach.log"
    ref = signing.attach(signed, repo, digest, insecure=False, scratch=tmp_path, log=log)
    assert ref == f"{repo}:sha256-{digest.removeprefix('sha256:')}.att"
    manifest = skopeo_raw(ref)  # what cosign reads: an OCI manifest whose layer is the envelope
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {
        "predicateType": "https://slsa.dev/provenance/v1",
        "dev.cosignproject.cosign/signature": "",
    }
    [fetched] = signing.fetch_attached(repo, digest, insecure=False, scratch=tmp_path)
    assert fetched == signed
    assert signing.verify(fetched, keys["pub"]) == statement()
    assert "skopeo" in log.read_text()
    # a second attestation joins the first (as cosign attest does); the same one again is not added twice
    second = signing.sign(statement(name="istioctl"), keys["key"])
    assert signing.attach(second, repo, digest, insecure=False, scratch=tmp_path, log=None) == ref
    assert signing.attach(signed, repo, digest, insecure=False, scratch=tmp_path, log=None) == ref
    assert signing.fetch_attached(repo, digest, insecure=False, scratch=tmp_path) == [signed, second]
    assert len(skopeo_raw(ref)["layers"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attach.log"]  # no work directory left behind
    # the image itself is untouched
    assert skopeo_raw(f"{repo}@{digest}")["layers"][0]["mediaType"] != signing.ENVELOPE_MEDIA_TYPE


@pytest.mark.slow
def test_attach_failures_are_one_line(pushed: tuple[str, str], signed: dict[str, Any], tmp_path: Path) -> None:
    repo, digest = pushed
    absent = "sha256:" + "0" * 64
    with pytest.raises(SourceError, match="does not exist in the registry: push the image first"):
        signing.attach(signed, repo, absent, insecure=False, scratch=tmp_path, log=None)
    down = f"127.0.0.1:{free_port()}/prov/tiny"
    with pytest.raises(SourceError, match=f"the registry of {down}@{digest} is not reachable"):
        signing.attach(signed, down, digest, insecure=False, scratch=tmp_path, log=None)
    with pytest.raises(SourceError, match="is not reachable"):
        signing.fetch_attached(down, digest, insecure=False, scratch=tmp_path)
    # TLS (verified) for any other registry, unless told otherwise; nothing is tried over plain HTTP
    for insecure, flag in ((False, "--tls-verify=true"), (True, "--tls-verify=false")):
        log = tmp_path / f"remote-{insecure}.log"
        with pytest.raises(SourceError, match="registry.invalid/prov/tiny@.* is not reachable"):
            signing.attach(signed, "registry.invalid/prov/tiny", digest, insecure=insecure, scratch=tmp_path, log=log)
        assert flag in log.read_text()
    with pytest.raises(UsageError, match="has a tag or digest"):
        signing.attach(signed, f"{repo}:1", digest, insecure=False, scratch=tmp_path, log=None)
    with pytest.raises(UsageError, match="is not a manifest digest"):
        signing.attach(signed, repo, digest[:-1], insecure=False, scratch=tmp_path, log=None)
    with pytest.raises(UsageError, match="is not a docker image reference"):
        signing.attach(signed, "Prov/--tiny", digest, insecure=False, scratch=tmp_path, log=None)
    with pytest.raises(VerificationError, match="wrong payloadType"):
        signing.attach(
            {**signed, "payloadType": "text/plain"}, repo, digest, insecure=False, scratch=tmp_path, log=None
        )


@pytest.mark.slow
def test_credentials_come_from_the_docker_config(
    pushed: tuple[str, str], signed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, digest = pushed
    (tmp_path / "htpasswd").write_text("ci:" + bcrypt.hashpw(b"s3cret-pw", bcrypt.gensalt(4)).decode() + "\n")
    address, proc = start_registry(tmp_path / "auth", tmp_path / "htpasswd")
    try:
        private = f"{address}/prov/tiny"
        subprocess.run(
            [
                *("skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"),
                *("--dest-creds", "ci:s3cret-pw", f"docker://{repo}@{digest}", f"docker://{private}:1"),
            ],
            check=True,
            capture_output=True,
        )
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
        with pytest.raises(SourceError, match=f"the registry refused {private}@{digest}: not authorized"):
            signing.attach(signed, private, digest, insecure=False, scratch=tmp_path / "s", log=None)
        config = tmp_path / "docker"
        config.mkdir()
        auth = base64.b64encode(b"ci:s3cret-pw").decode()
        (config / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        ref = signing.attach(signed, private, digest, insecure=False, scratch=tmp_path / "s", log=tmp_path / "log")
        assert signing.fetch_attached(private, digest, insecure=False, scratch=tmp_path / "s") == [signed]
        assert skopeo_raw(ref, "--creds", "ci:s3cret-pw")["layers"][0]["mediaType"] == signing.ENVELOPE_MEDIA_TYPE
        assert "s3cret" not in (tmp_path / "log").read_text()
    finally:
        stop(proc)


def test_an_unsigned_envelope_is_readable_but_never_verifies(keys: dict[str, Path]) -> None:
    doc = statement()
    envelope = signing.unsigned(doc)
    assert envelope["signatures"] == [] and provenance.decode_envelope(envelope) == doc
    with pytest.raises(VerificationError, match="unsigned"):
        signing.verify(envelope, keys["pub"])
