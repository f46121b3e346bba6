"""Kernel fit (kernel.py): the host's page size and virtual address bits read from real-format samples and from this
machine, the --target-kernel grammar, `auto` following the target, the doctor rows, and what the plan records."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from helpers import invoke, one_error
from istiobuild import doctor, kernel, provenance, release, toolchain
from istiobuild.arch import Arch, host_arch
from istiobuild.config import load
from istiobuild.errors import ConfigError, UsageError

# -- real samples (verbatim lines; where they come from is said above each) ------------------------

# /proc/cpuinfo of this project's machine (processor 0, Linux 6.18, a Xeon VM): the CPU reports 57 virtual bits,
# the kernel runs 4-level paging, so `la57` is not among the flags (between avx512_vpopcntdq and rdpid).
CPUINFO_HERE = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht \
syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 \
fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm \
3dnowprefetch cpuid_fault ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid \
avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 \
xsaves avx_vnni avx512_bf16 wbnoinvd arat avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni \
avx512_bitalg avx512_vpopcntdq rdpid bus_lock_detect cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk ibt \
amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities
bogomips\t: 4200.00
clflush size\t: 64
cache_alignment\t: 64
address sizes\t: 46 bits physical, 57 bits virtual
power management:
"""
# An i7-4850HQ VM's /proc/cpuinfo (as quoted in a public Go test): a 48-bit CPU.
CPUINFO_48 = """\
model name\t: Intel(R) Core(TM) i7-4850HQ CPU @ 2.30GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr vmx pge mca cmov pat pse36 clflush mmx fxsr sse sse2 \
syscall nx rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc pni pclmulqdq monitor ssse3 cx16 sse4_1 sse4_2 \
movbe popcnt aes xsave avx rdrand hypervisor lahf_lm abm
bugs\t\t:
address sizes\t: 39 bits physical, 48 bits virtual
power management:
"""
# A Xeon Platinum 8370C VM running 5-level paging: its flags (as lscpu copies them from /proc/cpuinfo) include la57.
CPUINFO_LA57 = """\
model name\t: Intel(R) Xeon(R) Platinum 8370C CPU @ 2.80GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht \
syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology tsc_reliable nonstop_tsc cpuid aperfmperf \
tsc_known_freq pni pclmulqdq vmx ssse3 fma cx16 pcid sse4_1 sse4_2 movbe popcnt tsc_deadline_timer aes xsave avx f16c \
rdrand hypervisor lahf_lm abm 3dnowprefetch tpr_shadow ept vpid ept_ad fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 \
erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl \
xsaveopt xsavec xgetbv1 xsaves vnmi avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg \
avx512_vpopcntdq la57 rdpid fsrm arch_capabilities
address sizes\t: 46 bits physical, 57 bits virtual
"""
# Debian's linux-config-6.1 (6.1.192-3), config.arm64_none_arm64: lines 3 and 416-421.
CONFIG_DEBIAN_ARM64 = """\
# Linux/arm64 6.1.192 Kernel Configuration
CONFIG_ARM64_4K_PAGES=y
# CONFIG_ARM64_16K_PAGES is not set
# CONFIG_ARM64_64K_PAGES is not set
# CONFIG_ARM64_VA_BITS_39 is not set
CONFIG_ARM64_VA_BITS_48=y
CONFIG_ARM64_VA_BITS=48
"""
# A 4K-page, 39-bit arm64 .config (the Raspberry Pi OS kernel's choice; a kbuild robot's attached config).
CONFIG_39 = """\
CONFIG_ARM64_4K_PAGES=y
# CONFIG_ARM64_16K_PAGES is not set
# CONFIG_ARM64_64K_PAGES is not set
CONFIG_ARM64_VA_BITS_39=y
# CONFIG_ARM64_VA_BITS_48 is not set
CONFIG_ARM64_VA_BITS=39
CONFIG_ARM64_PA_BITS_48=y
CONFIG_ARM64_PA_BITS=48
"""
# A 64K-page, 42-bit arm64 .config (Linux/arm64 6.1.0, a kernel test robot's arm64-randconfig-r021-20221218).
CONFIG_64K_42 = """\
# Linux/arm64 6.1.0 Kernel Configuration
# CONFIG_ARM64_4K_PAGES is not set
# CONFIG_ARM64_16K_PAGES is not set
CONFIG_ARM64_64K_PAGES=y
CONFIG_ARM64_VA_BITS_42=y
# CONFIG_ARM64_VA_BITS_48 is not set
CONFIG_ARM64_VA_BITS=42
CONFIG_ARM64_PA_BITS_48=y
CONFIG_ARM64_PA_BITS=48
"""
# /proc/<pid>/maps on an arm64 Ubuntu VM, Linux v6.5-rc3, 48-bit VA (from a linux-mm thread): the stack ends at 2^48.
MAPS_ARM64_48 = """\
aaaaaaaa0000-aaaaaaaa1000 r-xp 00000000 fe:02 8199010                    /home/ubuntu/merge
aaaaaaab2000-aaaaaaad3000 rw-p 00000000 00:00 0                          [heap]
fffff7e00000-fffff7f89000 r-xp 00000000 fe:02 41410085                   /usr/lib/aarch64-linux-gnu/libc.so.6
fffff7ff9000-fffff7ffb000 r--p 00000000 00:00 0                          [vvar]
fffff7ffb000-fffff7ffc000 r-xp 00000000 00:00 0                          [vdso]
fffffffdf000-1000000000000 rw-p 00000000 00:00 0                         [stack]
"""
# /proc/<pid>/maps of an arm64 Linux with 39-bit VA (a gem5 full-system run's process map): the stack ends at 2^39.
MAPS_ARM64_39 = """\
7ff7ffa000-7ff7ffb000 r--p 00000000 00:00 0                              [vvar]
7ff7ffb000-7ff7ffc000 r-xp 00000000 00:00 0                              [vdso]
7ffffdf000-8000000000 rw-p 00000000 00:00 0                              [stack]
"""
# The end of /proc/self/maps on this project's x86_64 machine: [vsyscall] lies in the kernel half.
MAPS_X86_64 = """\
7fde2f77a000-7fde2f77c000 rw-p 00033000 fe:00 338944                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7ffc04966000-7ffc04987000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


# -- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (CPUINFO_HERE, (48, "/proc/cpuinfo: CPU 57, 4-level paging")),
        (CPUINFO_48, (48, "/proc/cpuinfo")),
        (CPUINFO_LA57, (57, "/proc/cpuinfo")),
        ("processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n", None),
    ],
    ids=["cpu-57-4-level", "cpu-48", "la57", "arm64-has-none"],
)
def test_x86_64_va_bits_from_cpuinfo(cpuinfo: str, expected: tuple[int, str] | None) -> None:
    assert kernel.cpuinfo_va_bits(cpuinfo) == expected


@pytest.mark.parametrize(
    ("config", "bits"),
    [(CONFIG_DEBIAN_ARM64, 48), (CONFIG_39, 39), (CONFIG_64K_42, 42), ("# CONFIG_ARM64 is not set\n", None)],
)
def test_arm64_va_bits_from_the_kernel_config(config: str, bits: int | None) -> None:
    assert kernel.config_va_bits(config) == bits


@pytest.mark.parametrize(("maps", "bits"), [(MAPS_ARM64_48, 48), (MAPS_ARM64_39, 39), (MAPS_X86_64, 47), ("", None)])
def test_va_bits_inferred_from_the_highest_user_address(maps: str, bits: int | None) -> None:
    """The kernel half ([vsyscall]) is not user space: x86_64's user space is 47 bits of its 48."""
    assert kernel.maps_va_bits(maps) == bits


def test_config_gz_first_then_boot_config(tmp_path: Path) -> None:
    gz, boot, broken = tmp_path / "config.gz", tmp_path / "config-6.1.0-arm64", tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(CONFIG_64K_42.encode()))
    boot.write_text(CONFIG_DEBIAN_ARM64)
    broken.write_bytes(b"not gzip")
    assert kernel.read_config([gz, boot]) == (CONFIG_64K_42, gz)
    assert kernel.read_config([tmp_path / "missing.gz", broken, boot]) == (CONFIG_DEBIAN_ARM64, boot)
    assert kernel.read_config([tmp_path / "missing.gz"]) is None


def test_host_kernel_reads_where_each_arch_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO_HERE)
    (tmp_path / "config.gz").write_bytes(gzip.compress(CONFIG_39.encode()))
    (tmp_path / "maps").write_text(MAPS_ARM64_48)
    x86 = kernel.host_kernel(Arch.X86_64, page_bytes=4096, cpuinfo=tmp_path / "cpuinfo")
    assert x86 == kernel.Kernel(page_size="4k", va_bits=48, source="/proc/cpuinfo: CPU 57, 4-level paging")
    arm = kernel.host_kernel(Arch.AARCH64, page_bytes=65536, configs=[tmp_path / "config.gz"], maps=tmp_path / "maps")
    assert (arm.page_size, arm.va_bits, arm.source) == ("64k", 39, f"CONFIG_ARM64_VA_BITS, {tmp_path / 'config.gz'}")
    inferred = kernel.host_kernel(Arch.AARCH64, page_bytes=4096, configs=[], maps=tmp_path / "maps")
    assert (inferred.va_bits, inferred.source) == (48, f"inferred from {tmp_path / 'maps'}")
    assert inferred.describe() == f"4K pages, 48-bit VA (inferred from {tmp_path / 'maps'})"
    unknown = kernel.host_kernel(Arch.X86_64, page_bytes=4096, cpuinfo=tmp_path / "missing")
    assert unknown.describe() == "4K pages, VA bits unknown"


def test_this_machine() -> None:
    """This machine's real facts, each checked against a second source."""
    here = kernel.host_kernel(host_arch())
    assert here.page_size == f"{os.sysconf('SC_PAGE_SIZE') // 1024}k" == doctor.host_page_size()
    assert here.va_bits in kernel.VA_BITS, here
    config = kernel.read_config([Path("/proc/config.gz"), Path(f"/boot/config-{os.uname().release}")])
    if config is not None:  # the kernel's own page shift agrees with sysconf
        shift = re.search(r"^CONFIG_(?:ARM64_)?PAGE_SHIFT=(\d+)$", config[0], re.M)
        assert shift is not None and 2 ** int(shift.group(1)) == os.sysconf("SC_PAGE_SIZE")
    user_bits = kernel.maps_va_bits(Path("/proc/self/maps").read_text())
    assert user_bits is not None
    if host_arch() is Arch.X86_64:
        flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        la57 = flags is not None and "la57" in flags.group(1).split()
        assert here.va_bits == (57 if la57 else 48) and user_bits == 47  # user space: the lower half of 48 bits
    else:
        assert here.va_bits is not None and user_bits <= here.va_bits


# -- the target kernel's grammar -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("page_size=64k", "page_size=64k"),
        ("page_size=4k,va_bits=39", "page_size=4k,va_bits=39"),
        ("PAGE_SIZE=64K, VA_BITS=48", "page_size=64k,va_bits=48"),
        ("va_bits=42,page_size=64k", "page_size=64k,va_bits=42"),
        ("page_size=4k,va_bits=57", "page_size=4k,va_bits=57"),
    ],
)
def test_target_kernel_accepted_and_normalised(text: str, spec: str) -> None:
    assert kernel.check_target_kernel(text).spec() == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("64k", "has '64k', not KEY=VALUE"),
        ("pagesize=64k", "has an unknown key 'pagesize' (known: page_size, va_bits)"),
        ("va_bits=48", "has no page_size"),
        ("page_size=8k", "has page_size '8k', not one of 4k, 16k, 64k"),
        ("page_size=64k;touch /tmp/x", "has page_size '64k;touch /tmp/x'"),
        ("page_size=64k,va_bits=40", "has va_bits '40', not one of 39, 42, 47, 48, 52, 57"),
        ("page_size=64k,va_bits=٤٨", "has va_bits '٤٨'"),
        ("page_size=4k,page_size=64k", "sets page_size twice"),
        ("page_size=16k", "names a 16K-page kernel: no patch series supports 16k pages yet; build for a 4k or 64k"),
    ],
)
def test_target_kernel_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        kernel.check_target_kernel(text, "--target-kernel")
    assert err.value.message.startswith(f"--target-kernel {text!r} ") and message in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    ("spec", "arch"),
    [("page_size=64k", Arch.X86_64), ("page_size=4k,va_bits=42", Arch.AARCH64),
     ("page_size=64k,va_bits=39", Arch.AARCH64), ("page_size=4k,va_bits=47", Arch.AARCH64),
     ("page_size=4k,va_bits=39", Arch.X86_64)],
)  # fmt: skip
def test_a_kernel_no_arch_has_is_refused(spec: str, arch: Arch) -> None:
    with pytest.raises(UsageError, match=f"target kernel {spec} is not an {arch} kernel: {arch} kernels have 4k pages"):
        kernel.check_fits(kernel.check_target_kernel(spec), arch)


# -- auto follows the target ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_size", "target", "arch", "host", "host_page", "expected"),
    [
        ("auto", "", Arch.AARCH64, Arch.AARCH64, "64k", "64k"),  # on the machine itself
        ("auto", "", Arch.AARCH64, Arch.X86_64, "4k", "4k"),  # cross: 4k
        ("64k", "", Arch.AARCH64, Arch.X86_64, "4k", "64k"),  # explicit
        ("auto", "page_size=64k", Arch.AARCH64, Arch.X86_64, "4k", "64k"),  # the target's, not the host's
        ("auto", "page_size=4k,va_bits=39", Arch.AARCH64, Arch.AARCH64, "64k", "4k"),
        ("64k", "page_size=64k,va_bits=48", Arch.AARCH64, Arch.AARCH64, "4k", "64k"),  # explicit and the same
    ],
)
def test_auto_resolution(page_size: str, target: str, arch: Arch, host: Arch, host_page: str, expected: str) -> None:
    assert kernel.build_page_size(page_size, target, arch=arch, host=host, host_page_size=host_page) == expected


def test_every_layer_sets_it_normalised(tmp_path: Path) -> None:
    (tmp_path / "istiobuild.toml").write_text('target_kernel = "page_size=4K"\n')
    assert load({}, cwd=tmp_path, env={})[0].target_kernel == "page_size=4k"
    env = {"ISTIOBUILD_TARGET_KERNEL": "page_size=64k,VA_BITS=39"}
    assert load({}, cwd=tmp_path, env=env)[0].target_kernel == "page_size=64k,va_bits=39"
    assert load({"target_kernel": "page_size=64k"}, cwd=tmp_path, env=env)[0].target_kernel == "page_size=64k"
    with pytest.raises(ConfigError, match=r"^ISTIOBUILD_PAGE_SIZE '4k' contradicts ISTIOBUILD_TARGET_KERNEL "):
        load({}, cwd=tmp_path, env={**env, "ISTIOBUILD_PAGE_SIZE": "4k"})
    with pytest.raises(ConfigError, match=r"^target_kernel in .*istiobuild.toml 'page_size=16k' names a 16K-page"):
        (tmp_path / "istiobuild.toml").write_text('target_kernel = "page_size=16k"\n')
        load({}, cwd=tmp_path, env={})


# -- the doctor ---------------------------------------------------------------------------------------


def kernel_rows(settings: Any, tmp_path: Path, *, arch: Arch, page_size: str) -> dict[str, doctor.Check]:
    checks = doctor.run_checks(
        arch=arch, host=host_arch(), page_size=page_size, release=release.get("example"),
        toolchain=toolchain.get("gcc"), settings=settings, proxy_dir=tmp_path / "proxy", stages=set(),
    )  # fmt: skip
    return {c.name: c for c in checks if c.name in ("kernel page size", "target kernel")}


def test_doctor_rows(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    here = kernel.host_kernel(host_arch())
    other = "64k" if here.page_size == "4k" else "4k"
    plain = kernel_rows(settings_for(), tmp_path, arch=host_arch(), page_size=other)
    assert list(plain) == ["kernel page size"] and plain["kernel page size"].found == here.describe()
    assert plain["kernel page size"].fix.startswith(f"pass --page-size {here.page_size}")
    target = f"page_size={other},va_bits=39"
    rows = kernel_rows(settings_for(target_kernel=target), tmp_path, arch=host_arch(), page_size=other)
    assert "--page-size" not in rows["kernel page size"].fix  # the target, not this machine, decides
    row = rows["target kernel"]
    assert (row.found, row.required, row.ok) == (
        f"{other.upper()} pages, 39-bit VA",
        f"the build assumes {other}",
        True,
    )
    assert row.fix.startswith("warning: 39-bit virtual addresses: allocators that assume 48-bit addresses may fail")
    assert "istio#51708" in row.fix and "gperftools" in row.fix
    # a build that assumes another page size than the target's (only reachable around validate) is a failed row
    wrong = kernel_rows(settings_for(target_kernel=f"page_size={other}"), tmp_path, arch=host_arch(), page_size="?")
    assert not wrong["target kernel"].ok and wrong["target kernel"].fix == f"pass --page-size {other}"


def test_doctor_cli_text_and_json() -> None:
    args = ("doctor", "--release", "example", "--arch", "aarch64", "--toolchain", "gcc")
    text = invoke(*args, "--target-kernel", "page_size=64k,va_bits=42").stdout
    row = next(line for line in text.splitlines() if "target kernel" in line)
    assert "64K pages, 42-bit VA" in row and "the build assumes 64k" in row and "warning: 42-bit" in row
    assert "kernel page size" in text and f"{kernel.host_kernel(host_arch()).describe()}" in text
    rows = {c["name"]: c for c in json.loads(invoke(*args, "--target-kernel", "PAGE_SIZE=64k", "--json").stdout)}
    assert rows["target kernel"] == {"name": "target kernel", "found": "64K pages, VA bits unknown",
                                     "required": "the build assumes 64k", "ok": True, "fix": ""}  # fmt: skip
    assert rows["kernel page size"]["found"] == kernel.host_kernel(host_arch()).describe()
    bad = invoke(*args, "--target-kernel", "page_size=64k", "--page-size", "4k")
    assert bad.returncode == 2 and "--page-size '4k' contradicts --target-kernel" in one_error(bad)


# -- the plan and what it records -------------------------------------------------------------------


def test_contradicting_page_size_is_one_error_line(tmp_path: Path) -> None:
    proc = invoke("plan", "--release", "example", "--arch", "aarch64", "--target-kernel", "page_size=64k",
                  "--page-size", "4k", "--workdir", str(tmp_path / "w"))  # fmt: skip
    assert proc.returncode == 2
    assert one_error(proc) == (
        "error: --page-size '4k' contradicts --target-kernel 'page_size=64k' (a 64K-page kernel); "
        "leave it at auto (it follows the target kernel) or give 64k"
    )
    assert not (tmp_path / "w").exists()


def record_steps(plan: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    record = next(s for s in plan["stages"] if s["name"] == "record")
    steps = {s["action"]: s for s in record["steps"]}
    return dict(steps["WriteRecord"]["facts"]), steps["WriteProvenance"]["external"]


def test_plan_follows_and_records_the_target(tmp_path: Path) -> None:
    base = ("plan", "--release", "example", "--arch", "aarch64", "--workdir", str(tmp_path / "w"), "--json")
    plan = json.loads(invoke(*base, "--target-kernel", "page_size=64K,va_bits=42").stdout)
    assert plan["page_size"] == "64k"  # auto, on an x86_64 host: the target's, not 4k
    assert any(
        n.startswith("target kernel page_size=64k,va_bits=42: built for 64k pages; warning: 42-bit")
        for n in plan["notes"]
    )
    patch = next(s for s in plan["stages"] if s["name"] == "patch")
    assert "0004-wee8-64k-page-size.patch" in json.dumps(patch)  # the series' page_size=64k condition applies
    facts, external = record_steps(plan)
    assert facts["target_kernel"] == external["targetKernel"] == "page_size=64k,va_bits=42"
    assert facts["page_size"] == external["pageSize"] == "64k"
    without = json.loads(invoke(*base).stdout)
    facts, external = record_steps(without)
    assert "target_kernel" not in facts and set(external) == {*provenance.EXTERNAL_PARAMETERS, "allocator"}
    assert not any("target kernel" in n for n in without["notes"]) and without["page_size"] == "4k"
    wrong = invoke("plan", "--release", "example", "--arch", "x86_64", "--target-kernel", "page_size=64k")
    assert wrong.returncode == 2 and "target kernel page_size=64k is not an x86_64 kernel" in one_error(wrong)


def test_provenance_takes_target_kernel_only_as_a_string() -> None:
    external = {"release": "example", "arch": "aarch64", "toolchain": "gcc", "pageSize": "64k", "hub": "h", "tag": "t"}
    args: dict[str, Any] = {
        "subjects": [provenance.image_subject("istio/pilot:t-arm64", image_id="sha256:" + "2" * 64)],
        "internal": {}, "dependencies": [], "builder_id": "https://istiobuild.github.io/builders/local/v1",
        "builder_version": {"istiobuild": "0"}, "invocation_id": "x",
        "started": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
        "finished": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
    }  # fmt: skip
    doc = provenance.statement(external={**external, "targetKernel": "page_size=64k"}, **args)
    assert doc["predicate"]["buildDefinition"]["externalParameters"]["targetKernel"] == "page_size=64k"
    with pytest.raises(ValueError, match="has unknown parameters targetKernels"):
        provenance.statement(external={**external, "targetKernels": "page_size=64k"}, **args)
    with pytest.raises(ValueError, match="externalParameters.targetKernel is 64, not a string"):
        provenance.statement(external={**external, "targetKernel": 64}, **args)
