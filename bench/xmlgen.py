"""Domain XML: microseconds per domain generated (VMSpec + designer.design + domxml.render)
and validated against libvirt's RelaxNG schema (loaded once; its load time is reported)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from lxml import etree

import virtlib
from bench.context import MEM_MIB, VCPUS, Context
from bench.model import BenchResult, Row
from bench.stats import summarize
from virtlib.accel import AccelChoice
from virtlib.backends.libvirt import designer, domxml
from virtlib.spec import VMSpec
from virtlib.state import Allocations

BATCH = 50


class InvalidXMLError(RuntimeError):
    """A generated domain does not validate against libvirt's schema."""


def _per_item_us(call: Callable[[int], object], batches: int) -> list[float]:
    """Microseconds per call, one sample per batch of BATCH calls."""
    samples = []
    for batch in range(batches):
        start = time.perf_counter()
        for i in range(BATCH):
            call(batch * BATCH + i)
        samples.append((time.perf_counter() - start) / BATCH * 1e6)
    return samples


def run(ctx: Context) -> BenchResult:
    result = BenchResult("xmlgen")
    batches = ctx.reps(40, 8)
    guest = ctx.guest
    params = virtlib.Params(vm_type="libvirt", connect_uri=ctx.uri, mem=str(MEM_MIB))
    params["smp"] = str(VCPUS)
    facts = designer.HostFacts(driver="qemu", accel=AccelChoice("tcg", "benchmark"))
    allocations = Allocations.of({0: "52:54:00:12:34:56"}, {(0, 22): 22222})
    boot = designer.BootMedia(guest.kernel, guest.initrd, guest.kernel_args)
    metadata = {"instance": "bench", "forwards": "0:22=22222"}

    def generate(i: int) -> str:
        spec = VMSpec.from_params(f"{ctx.prefix}-xml-{i}", params)
        config = designer.design(spec, facts, allocations, boot, metadata, uuid=str(uuid.uuid4()))
        return str(domxml.render(config))

    start = time.perf_counter()
    schema = etree.RelaxNG(etree.parse(str(domxml.schema_path())))
    load_ms = (time.perf_counter() - start) * 1000

    def validate(xml: str) -> None:
        if not schema.validate(etree.fromstring(xml.encode())):
            raise InvalidXMLError(str(schema.error_log.last_error))

    samples = [generate(i) for i in range(BATCH)]
    validate(samples[0])
    gen = _per_item_us(generate, batches)
    val = _per_item_us(lambda i: validate(samples[i % BATCH]), batches)
    both = _per_item_us(lambda i: validate(generate(i)), batches)
    extra = {"schema_load_ms": round(load_ms, 1), "batch": BATCH, "xml_bytes": len(samples[0])}
    result.rows += [
        Row("xmlgen", "generate (VMSpec + design + render)", summarize(gen, "us"), extra=extra),
        Row("xmlgen", "validate (RelaxNG domain.rng)", summarize(val, "us")),
        Row("xmlgen", "generate + validate", summarize(both, "us")),
    ]
    result.notes.append(f"xmlgen: loading domain.rng took {load_ms:.0f} ms (once)")
    return result
