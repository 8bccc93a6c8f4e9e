"""proto/ against Envoy's real v3 API: every message, field, enum value and method we declare has
Envoy's name, number, type, label, json_name and oneof (tests/conformance/compare.py).

The reference .proto files come from the npm package @grpc/grpc-js-xds (fetched once into
build/conformance by tests/conformance/fetch_envoy_api.sh, which `make deps` also runs); both
descriptor sets are made by Debian's protoc.  A failed fetch or a missing protoc fails the test:
it never skips.
"""
import os
import sys

from harness import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "conformance"))
import compare  # noqa: E402


def _run(ctx):
    try:
        return compare.run(out_dir=os.path.join(ctx.tmp, "conformance"))
    except compare.SetupError as e:
        raise AssertionError(f"conformance setup failed: {e}") from None


def test_proto_matches_envoy_api(ctx):
    bad, notes = _run(ctx)
    dep = sum("deprecated in the Envoy API" in n for n in notes)
    print(f"  conformance: {len(notes)} notes, {dep} of them fields/values Envoy deprecates "
          f"(details: /usr/bin/python3 tests/conformance/compare.py)")
    assert not bad, (f"{len(bad)} declaration(s) in proto/ differ from Envoy's API "
                     f"(@grpc/grpc-js-xds@{compare.ref_version()}):\n" + "\n".join(bad))


def _sets(ctx):
    from google.protobuf import descriptor_pb2
    out = os.path.join(ctx.tmp, "conformance")
    os.makedirs(out, exist_ok=True)
    deps = compare.fetch(os.path.join(ROOT, "build", "conformance"))
    files = compare.build_ours(os.path.join(ROOT, "proto"), os.path.join(out, "ours.pb"))
    compare.build_theirs(deps, files, os.path.join(out, "envoy.pb"))

    def load(name):
        s = descriptor_pb2.FileDescriptorSet()
        with open(os.path.join(out, name), "rb") as f:
            s.ParseFromString(f.read())
        return s
    return load, files


def _find_message(fds, full):
    for f in fds.file:
        pkg = f.package + "."
        stack = [(pkg + m.name, m) for m in f.message_type]
        while stack:
            name, m = stack.pop()
            if name == full:
                return m
            stack += [(name + "." + n.name, n) for n in m.nested_type]
    raise AssertionError(f"{full} not in our descriptor set")


def _field(msg, name):
    for fd in msg.field:
        if fd.name == name:
            return fd
    raise AssertionError(f"no field {name} in {msg.name}")


def test_conformance_check_catches_each_kind_of_mismatch(ctx):
    """The checker itself: each kind of deliberate error in our descriptors is reported, with its
    full path, and the unmodified set passes."""
    from google.protobuf import descriptor_pb2
    FDP = descriptor_pb2.FieldDescriptorProto
    load, files = _sets(ctx)
    theirs = load("envoy.pb")
    bad, _ = compare.compare_sets(load("ours.pb"), theirs, files)
    assert not bad, bad

    C = "envoy.config.cluster.v3.Cluster"

    def number(s):
        _field(_find_message(s, C), "connect_timeout").number = 44

    def type_(s):
        _field(_find_message(s, C), "name").type = FDP.TYPE_BYTES

    def type_name(s):
        _field(_find_message(s, C), "connect_timeout").type_name = ".google.protobuf.Timestamp"

    def label(s):
        _field(_find_message(s, C), "name").label = FDP.LABEL_REPEATED

    def json(s):
        _field(_find_message(s, C), "connect_timeout").json_name = "connect_timeout"

    def renamed(s):
        _field(_find_message(s, C), "connect_timeout").name = "connection_timeout"

    def oneof_out(s):
        fd = _field(_find_message(s, "envoy.config.core.v3.Address"), "socket_address")
        fd.ClearField("oneof_index")

    def oneof_in(s):
        m = _find_message(s, C)
        m.oneof_decl.add(name="bogus")
        _field(m, "name").oneof_index = len(m.oneof_decl) - 1

    def enum_value(s):
        for f in s.file:
            for m in f.message_type:
                if f.package + "." + m.name == C:
                    for e in m.enum_type:
                        if e.name == "DiscoveryType":
                            for v in e.value:
                                if v.name == "STRICT_DNS":
                                    v.number = 9

    def streaming(s):
        for f in s.file:
            for sv in f.service:
                for mt in sv.method:
                    if mt.name == "StreamAggregatedResources":
                        mt.server_streaming = False

    def syntax(s):
        for f in s.file:
            if f.name == "envoy/type/v3/percent.proto":
                f.syntax = "proto2"

    def newer_field(s):  # checked against newer_than_reference.txt, not the snapshot
        D = "envoy.service.discovery.v3.DiscoveryResponse"
        _field(_find_message(s, D), "resource_errors").number = 8

    def unknown_message(s):
        _find_message(s, C).nested_type.add(name="NotInEnvoy")

    cases = [
        (number, f"field {C}.connect_timeout: number 44 here, 4 in Envoy"),
        (type_, f"field {C}.name: type bytes here, string in Envoy"),
        (type_name, f"field {C}.connect_timeout: type_name .google.protobuf.Timestamp here"),
        (label, f"field {C}.name: label repeated here, optional in Envoy"),
        (json, f"field {C}.connect_timeout: json_name connect_timeout here, connectTimeout"),
        (renamed, f"field {C}.connection_timeout: no such field in the Envoy API "
                  f"(number 4 is 'connect_timeout' there)"),
        (oneof_out, "field envoy.config.core.v3.Address.socket_address: oneof (none) here, "
                    "address in Envoy"),
        (oneof_in, f"field {C}.name: oneof bogus here, (none) in Envoy"),
        (enum_value, f"enum {C}.DiscoveryType value STRICT_DNS: number 9 here, 1 in Envoy"),
        (streaming, "method StreamAggregatedResources: server_streaming False here, True"),
        (syntax, "envoy.type.v3.Percent: syntax proto2 here, proto3 in Envoy"),
        (newer_field, "field envoy.service.discovery.v3.DiscoveryResponse.resource_errors: "
                      "number 8 here, 7 in Envoy"),
        (unknown_message, f"message {C}.NotInEnvoy: no such message in the Envoy API"),
    ]
    missed = []
    for mutate, want in cases:
        ours = load("ours.pb")
        mutate(ours)
        bad, _ = compare.compare_sets(ours, load("envoy.pb"), files)
        if not any(want in b for b in bad):
            missed.append(f"{mutate.__name__}: wanted '{want}', got {bad}")
    assert not missed, "\n".join(missed)
