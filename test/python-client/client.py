"""A gRPC client that is not ours: Python, with Debian's grpcio and stubs generated from
transferlab's protos. Drives the Sweeps service end to end and prints what it saw as JSON.

Usage: /usr/bin/python3 client.py STUBS_DIR SERVER SPEC_FILE BAD_SPEC_FILE OUT_DIR
"""
import json
import os
import sys

stubs, server, spec_file, bad_spec_file, out_dir = sys.argv[1:6]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
from transferlab.v1 import report_pb2, sweep_pb2, sweep_service_pb2, sweep_service_pb2_grpc  # noqa: E402

seen = {}
channel = grpc.insecure_channel(server)
sweeps = sweep_service_pb2_grpc.SweepServiceStub(channel)

# A bad spec: INVALID_ARGUMENT, and the message names the field.
with open(bad_spec_file, encoding="utf-8") as f:
    bad_text = f.read()
try:
    sweeps.StartSweep(sweep_service_pb2.StartSweepRequest(spec_text=bad_text, spec_file=bad_spec_file), timeout=30)
    seen["bad_spec"] = {"code": "OK"}
except grpc.RpcError as error:
    seen["bad_spec"] = {"code": error.code().name, "details": error.details()}

# An unknown sweep: NOT_FOUND.
try:
    sweeps.GetSweep(sweep_service_pb2.GetSweepRequest(sweep_id="no-such-sweep-1234"), timeout=30)
    seen["unknown"] = {"code": "OK"}
except grpc.RpcError as error:
    seen["unknown"] = {"code": error.code().name, "details": error.details()}

# A real sweep, watched as a stream to its end.
with open(spec_file, encoding="utf-8") as f:
    text = f.read()
started = sweeps.StartSweep(sweep_service_pb2.StartSweepRequest(spec_text=text, spec_file=spec_file), timeout=60)
sweep_id = started.sweep.id
kinds = {}
last_state = None
for response in sweeps.WatchSweep(sweep_service_pb2.WatchSweepRequest(sweep_id=sweep_id), timeout=600):
    kind = response.event.WhichOneof("kind")
    kinds[kind] = kinds.get(kind, 0) + 1
    if kind == "sweep":
        last_state = sweep_pb2.SweepState.Name(response.event.sweep.state)
    elif kind == "snapshot":
        last_state = sweep_pb2.SweepState.Name(response.event.snapshot.sweep.state)

final = sweeps.GetSweep(sweep_service_pb2.GetSweepRequest(sweep_id=sweep_id), timeout=30)
report = sweeps.GetReport(
    sweep_service_pb2.GetReportRequest(sweep_id=sweep_id, delivery=report_pb2.REPORT_DELIVERY_INLINE), timeout=120
).report
os.makedirs(out_dir, exist_ok=True)
files = []
for file in report.files:
    if file.WhichOneof("content") == "data":
        with open(os.path.join(out_dir, file.name), "wb") as f:
            f.write(file.data)
        files.append(file.name)

seen["sweep"] = {
    "id": sweep_id,
    "cells": len(started.cells),
    "watched": kinds,
    "last_watched_state": last_state,
    "final_state": sweep_pb2.SweepState.Name(final.sweep.state),
    "report_files": sorted(files),
    "report_arms": len(report.arms),
}
print(json.dumps(seen))
