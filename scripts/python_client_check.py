"""A worker written from proto/proto/sweep.proto alone, in Python, against a real coordinator.

It follows docs/PROTOCOL.md and checks each rule the coordinator promises there: ids and
secrets, the slot cap, progress, refusals that name the field, resuming only with the secret,
an idempotent repeated report, and bit-exact values in the report. It trains nothing: its
result says so in `notes` (a stand-in trainer, for the protocol only).

Usage: python_client_check.py STUBS_DIR ADDRESS TOKEN
"""

import re
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import sweep_pb2 as pb  # noqa: E402
import sweep_pb2_grpc as rpc  # noqa: E402

address, token = sys.argv[2], sys.argv[3]
auth = [("authorization", "Bearer " + token)]
stub = rpc.CoordinatorStub(grpc.insecure_channel(address))
EXACT = 0.11147540983606559  # re-rounded by the coordinator's old JSON parser


def check(cond, what):
    if not cond:
        sys.exit("python client check failed: " + what)
    print("ok:", what)


def refused(call, code, needle):
    try:
        call()
    except grpc.RpcError as e:
        return e.code() == code and needle in e.details()
    return False


reg = stub.Register(pb.RegisterRequest(name="py-worker", device=pb.DEVICE_KIND_CPU, slots=1), metadata=auth)
check(re.fullmatch(r"py-worker-[0-9a-f]{16}", reg.worker_id) is not None, "worker id is NAME-<16 hex>: " + reg.worker_id)
check(len(reg.resume_secret) >= 32 and reg.heartbeat_interval_ms > 0, "a resume secret and a heartbeat interval")
check(
    refused(lambda: stub.Register(pb.RegisterRequest(name="bad\nname", device=pb.DEVICE_KIND_CPU), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT, "name"),
    "a name with a newline is refused",
)

leases = stub.Lease(pb.LeaseRequest(worker_id=reg.worker_id, free_slots=5), metadata=auth).leases
check(len(leases) == 1, "a one-slot worker asking for 5 leases gets 1")
lease = leases[0]
ref = pb.LeaseRef(trial_id=lease.trial_id, attempt=lease.attempt)
check("epochs" in lease.spec_toml, "the lease carries the trial as TOML")

hb = stub.Heartbeat(pb.HeartbeatRequest(worker_id=reg.worker_id, running=[ref]), metadata=auth)
check(len(hb.cancel) == 0, "a heartbeat listing the lease keeps it")

epoch = pb.EpochMetrics(epoch=1, train_loss=2.25, train_accuracy=EXACT, lr=0.001, seconds=0.5, images_per_sec=10.0)
ack = stub.ReportProgress(pb.ProgressReport(worker_id=reg.worker_id, lease=ref, metrics=epoch), metadata=auth)
check(ack.accepted, "progress accepted")
bad = pb.EpochMetrics(epoch=1, train_accuracy=1.7)
check(
    refused(lambda: stub.ReportProgress(pb.ProgressReport(worker_id=reg.worker_id, lease=ref, metrics=bad), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT, "metrics.train_accuracy"),
    "an accuracy of 1.7 is refused, naming the field",
)

# A network cut: resuming needs the secret.
again = lambda secret: stub.Register(pb.RegisterRequest(
    name="py-worker", device=pb.DEVICE_KIND_CPU, slots=1,
    resume_worker_id=reg.worker_id, resume_secret=secret), metadata=auth).worker_id
check(again("guess") != reg.worker_id, "a wrong secret does not take the id over")
check(again(reg.resume_secret) == reg.worker_id, "the right secret resumes the id")

test = pb.TestMetrics(loss=2.3, accuracy=0.1, per_class_accuracy=[0.1] * 10,
                      confusion=[1 if i % 11 == 0 else 0 for i in range(100)], images=10)
result = pb.TrialResult(status=pb.TRIAL_STATUS_COMPLETED, epochs=[epoch], test=test, best_val_accuracy=EXACT,
                        train_images=10, parameters=1, device="cpu", seconds=0.5,
                        notes=["python protocol check: a stand-in result, nothing was trained"])
broken = pb.TrialResult()
broken.CopyFrom(result)
broken.status = pb.TRIAL_STATUS_FAILED
broken.reason = "x"
check(
    refused(lambda: stub.ReportResult(pb.ResultReport(worker_id=reg.worker_id, lease=ref, result=broken), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT, "result.test"),
    "a failed trial with test metrics is refused, naming the field",
)
first = stub.ReportResult(pb.ResultReport(worker_id=reg.worker_id, lease=ref, result=result), metadata=auth)
check(first.accepted, "the result is accepted")
repeat = stub.ReportResult(pb.ResultReport(worker_id=reg.worker_id, lease=ref, result=result), metadata=auth)
check(repeat.accepted and "already stored" in repeat.reason, "an identical repeat is acknowledged as stored")
print("python client check: all rules hold")
