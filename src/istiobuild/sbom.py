"""A CycloneDX 1.6 JSON SBOM per image, made with cyclonedx-python-lib (docs/sbom.md).

    build(image=, image_id=, platform=, scan=, sources=, base=, epoch=, tool_version=) -> dict
    validate(doc)            ValueError naming the schema errors (schema_errors(doc): all of them)
    dumps(doc) / write(path, doc)   the bytes written: keys sorted, indent 2; written atomically

`scan` is an imagefs.ImageScan (imagefs.scan_image(cli, image, scratch) exports and reads an image once);
`sources` are the upstream repositories (SourceRef: name, url, commit, tag); `base` is the base image as
(reference, sha256 digest: its repo digest when it has one). The document holds the image (metadata.component),
its base image, the sources with their public URL and commit, a `file` component per regular file with its
SHA-256, and for each Go binary its standard library, main module and dependencies (purl pkg:golang/...),
which its file component depends on. Validation is against the CycloneDX 1.6 JSON schema bundled with the
library, strict (no unknown properties).

Deterministic: the same inputs give the same bytes. serialNumber is a uuid5 of the image ID, the timestamp is
SOURCE_DATE_EPOCH, components are sorted by bom-ref and dependencies by ref, bom-refs are derived from what
they name (`image`, `base-image`, `source:<name>`, `file:<path>`, `go:<module>@<version>[=><replacement>]`),
and neither the host nor a scratch directory appears anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Commit, Component, ComponentType, Pedigree
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.schema.schema import SchemaVersion1Dot6
from packageurl import PackageURL

from istiobuild import fsutil, grammar
from istiobuild.imagefs import FileEntry, GoInfo, GoModule, ImageScan
from istiobuild.secrets import Redactor, registered_secrets, split_credentials

if TYPE_CHECKING:
    from cyclonedx.validation.json import JsonStrictValidator

_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:istiobuild:sbom")
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")
_P = "istiobuild:"  # our property namespace
_SLICE = 64  # components validated at a time (see schema_errors)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceRef:
    name: str  # proxy, envoy, istio
    url: str  # where it was fetched from; credentials, a query and a fragment are dropped
    commit: str
    tag: str = ""


def _sha256(digest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=digest.removeprefix("sha256:"))


def _props(**values: str) -> list[Property]:
    return [Property(name=_P + k.replace("_", ":"), value=v) for k, v in values.items()]


def _repository(reference: str) -> tuple[str, str]:
    """(repository, tag or "") of an image reference without a digest."""
    head, slash, last = reference.rpartition("/")
    name, _, tag = last.partition(":")
    return head + slash + name, tag


def _image_component(image: str, image_id: str, platform: str) -> Component:
    repository, tag = _repository(image.partition("@")[0])
    return Component(
        type=ComponentType.CONTAINER,
        bom_ref="image",
        name=repository,
        version=tag or image_id,
        hashes=[_sha256(image_id)],
        properties=_props(image_id=image_id, image_platform=platform),
    )


def _base_component(reference: str, digest: str) -> Component:
    repository, tag = _repository(reference.partition("@")[0])
    purl = PackageURL(
        type="oci",
        name=repository.rsplit("/", 1)[-1],
        version=digest,
        qualifiers={"repository_url": repository, **({"tag": tag} if tag else {})},
    )
    return Component(
        type=ComponentType.CONTAINER,
        bom_ref="base-image",
        name=repository,
        version=digest,
        purl=purl,
        hashes=[_sha256(digest)],
        properties=_props(image_reference=reference),
    )


def public_url(url: str) -> str:
    """A repository URL fit to publish: no credentials, no query or fragment, registered secrets masked."""
    # user:password@host:path has no scheme: grammar.redact masks its credentials
    bare = re.split(r"[?#]", split_credentials(url)[0], maxsplit=1)[0] if "://" in url else grammar.redact(url)
    return Redactor(registered_secrets()).text(bare)


_SCP_LIKE = re.compile(r"^(?P<user>[^@/:]+@)?(?P<host>[^/:]+):(?P<path>[^/].*)$")


def _iri(url: str) -> str:
    """git's scp-like `git@host:path` as the ssh URL it means (`ssh://git@host/path`): CycloneDX wants an IRI."""
    found = None if "://" in url else _SCP_LIKE.match(url)
    return f"ssh://{found['user'] or ''}{found['host']}/{found['path']}" if found else url


def _source_component(src: SourceRef) -> Component:
    url = _iri(public_url(src.url))
    return Component(
        type=ComponentType.APPLICATION,
        bom_ref=f"source:{src.name}",
        name=src.name,
        version=src.tag or src.commit,
        external_references=[ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(url))],
        pedigree=Pedigree(commits=[Commit(uid=src.commit)]),
    )


def _file_component(entry: FileEntry, info: GoInfo | None) -> Component:
    props = _props(file_size=str(entry.size), file_mode=f"{entry.mode:04o}")
    if entry.elf_machine is not None:
        props += _props(elf_machine=str(entry.elf_machine))
    if info is not None:
        props += _props(go_version=info.go_version, go_package=info.package)
        props += [Property(name=f"{_P}go:build:{k}", value=v) for k, v in info.settings]
    return Component(
        type=ComponentType.FILE,
        bom_ref=f"file:{entry.path}",
        name=entry.path,
        hashes=[_sha256(entry.sha256)],
        properties=props,
    )


def _purl(path: str, version: str) -> PackageURL:
    namespace, _, name = path.rpartition("/")
    return PackageURL(type="golang", namespace=namespace or None, name=name, version=version or None)


def _is_directory(path: str) -> bool:
    """Whether a replacement is a directory, not a module (Go's modfile.IsDirectoryPath)."""
    return path.startswith(("./", "../", "/")) or path in (".", "..")


def _module_component(mod: GoModule, kind: ComponentType = ComponentType.LIBRARY) -> Component:
    """The module compiled in: a module replacement is the component and the module it replaces its ancestor; a
    directory replacement keeps the replaced module's identity and names the directory."""
    ref = f"go:{mod.path}@{mod.version}"
    actual, props, pedigree = mod, [], None
    if mod.replace is not None and _is_directory(mod.replace.path):
        ref += f"=>{mod.replace.path}"
        props = _props(go_replace_dir=mod.replace.path)
    elif mod.replace is not None:
        ref += f"=>{mod.replace.path}@{mod.replace.version}"
        actual = mod.replace
        ancestor = Component(type=kind, name=mod.path, version=mod.version, purl=_purl(mod.path, mod.version))
        pedigree = Pedigree(ancestors=[ancestor])
    if actual.sum:
        props += _props(go_h1=actual.sum)
    return Component(
        type=kind,
        bom_ref=ref,
        name=actual.path,
        version=actual.version,
        purl=_purl(actual.path, actual.version),
        pedigree=pedigree,
        properties=props,
    )


def _go_components(info: GoInfo) -> list[Component]:
    """The standard library, the main module and every dependency of one Go binary."""
    std = GoModule(path="std", version=info.go_version)
    found = [_module_component(std)]
    if info.main is not None:
        found.append(_module_component(info.main, ComponentType.APPLICATION))
    return found + [_module_component(dep) for dep in info.deps]


def _check(
    image: str, image_id: str, platform: str, base: tuple[str, str] | None, sources: Sequence[SourceRef]
) -> None:
    grammar.check_image_reference(image, "image")
    digests = [("image ID", image_id)]
    if base is not None:
        grammar.check_image_reference(base[0], "base image")
        digests.append(("base image digest", base[1]))
    for what, digest in digests:
        if not _IMAGE_ID.fullmatch(digest):
            raise grammar.fail(what, digest, "is not a sha256 digest", "give sha256: and 64 lower-case hex digits")
    if not _PLATFORM.fullmatch(platform):
        raise grammar.fail("platform", platform, "is not an OCI platform", "give OS/ARCH[/VARIANT], e.g. linux/arm64")
    names = [src.name for src in sources]
    for src in sources:
        if names.count(src.name) > 1:
            raise grammar.fail("source name", src.name, "is given twice", "name each source once")
        if not _SOURCE_NAME.fullmatch(src.name):
            raise grammar.fail("source name", src.name, "is not a plain name", "give e.g. proxy, envoy or istio")
        if not _COMMIT.fullmatch(src.commit):
            raise grammar.fail(f"{src.name} commit", src.commit, "is not a full commit", "give the 40-hex SHA")
        grammar.check_repository(src.url, f"{src.name} repository")


def build(
    *,
    image: str,
    image_id: str,
    platform: str,
    scan: ImageScan,
    sources: Sequence[SourceRef],
    base: tuple[str, str] | None,
    epoch: int,
    tool_version: str,
) -> dict[str, Any]:
    """The CycloneDX 1.6 document of one image (a JSON object); `base` is (reference, sha256 digest), `epoch`
    SOURCE_DATE_EPOCH. Raises ConfigError for an argument outside its grammar."""
    _check(image, image_id, platform, base, sources)
    root = _image_component(image, image_id, platform)
    tools = [Component(type=ComponentType.APPLICATION, name="istiobuild", version=tool_version), this_component()]
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, image_id),
        metadata=BomMetaData(
            timestamp=datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc),
            tools=ToolRepository(components=tools),
            component=root,
        ),
    )
    upstream = ([_base_component(*base)] if base else []) + [_source_component(s) for s in sources]
    by_path = {f.path: f for f in scan.files}
    binaries: list[Component] = []
    modules: dict[str | None, Component] = {}
    for path in sorted(scan.go):
        binary = _file_component(by_path[path], scan.go[path])
        used = [modules.setdefault(c.bom_ref.value, c) for c in _go_components(scan.go[path])]
        binaries.append(binary)
        bom.register_dependency(binary, used)
    bom.components.update([*upstream, *binaries, *modules.values()])
    bom.register_dependency(root, [*upstream, *binaries])
    doc: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    # The other files go through the same library one component at a time: its Bom.validate(), which every
    # output runs, looks each component's dependency entry up by a linear scan (O(n²) in files).
    plain = [_component_json(_file_component(f, None)) for f in scan.files if f.path not in scan.go]
    doc["components"] = sorted(doc.get("components", []) + plain, key=lambda c: str(c["bom-ref"]))
    return doc


def _component_json(component: Component) -> dict[str, Any]:
    text: str = component.as_json(view_=SchemaVersion1Dot6)  # type: ignore[attr-defined]
    return dict(json.loads(text))


# ---------------------------------------------------------------------------------------------
# Validation and output


@functools.cache
def _validator() -> JsonStrictValidator:
    # imported when an SBOM is checked, not with the module: jsonschema's format checkers compile ~40
    # grammars on import (1.6 s), which every CLI command (`plan`, `doctor`, ...) paid before
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def _errors(doc: Mapping[str, Any], offset: int) -> list[str]:
    lines = []
    for error in _validator().validate_str(json.dumps(doc), all_errors=True) or ():
        path = list(error.data.absolute_path)
        if path[:1] == ["components"] and len(path) > 1:
            path[1] += offset
        lines.append(f"{'/'.join(map(str, path)) or '(document)'}: {error.data.message}")
    return lines


def schema_errors(doc: Mapping[str, Any]) -> list[str]:
    """Every way `doc` breaks the CycloneDX 1.6 JSON schema (strict), as `path: message` lines.

    The schema's uniqueItems on `components` makes jsonschema compare every pair of components (dicts: O(n²),
    minutes for thousands of files), so the components are checked for duplicates here, in one pass, and
    validated _SLICE at a time in copies of the document (the first with everything else, the others without
    the dependency graph, the other array that grows with the image)."""
    components = doc.get("components")
    if not isinstance(components, list) or len(components) <= _SLICE:
        return _errors(doc, 0)
    errors, seen = [], set()
    for i, component in enumerate(components):
        key = json.dumps(component, sort_keys=True)
        if key in seen:
            errors.append(f"components/{i}: a duplicate of an earlier component (uniqueItems)")
        seen.add(key)
    rest = {k: v for k, v in doc.items() if k != "dependencies"}
    for start in range(0, len(components), _SLICE):
        part = {**(rest if start else doc), "components": components[start : start + _SLICE]}
        errors += [e for e in _errors(part, start) if not start or e.startswith("components/")]
    return errors


def validate(doc: Mapping[str, Any]) -> None:
    """Raise ValueError naming every schema error of `doc` (CycloneDX 1.6, strict)."""
    errors = schema_errors(doc)
    if errors:
        shown = "; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
        raise ValueError(f"not a valid CycloneDX 1.6 document: {shown}")


def dumps(doc: Mapping[str, Any]) -> str:
    """The document as written: keys sorted, indent 2, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write(path: Path, doc: Mapping[str, Any]) -> None:
    fsutil.write_atomic(path, dumps(doc))
