"""A worker written from proto/proto/sweep.proto alone takes part in a PBT population.

It trains nothing: its "weights" are one number `w` that each epoch moves by a known
function of that epoch's learning rate (best at lr = 0.01), and its validation accuracy is
a function of `w`. So the population has something to find. It honours what a PBT segment
asks of any worker: the trial's `[[changes]]` (the rate from an epoch on), `stop_after`
(save a checkpoint there, before the result, and end as stopped), and a lease's
`checkpoint_epoch` (LoadCheckpoint, which may be another member's, and go on from it). The
checkpoint is JSON: `w` and the metrics of the epochs so far.

It leases one segment at a time until the coordinator has nothing left for a while, then
prints the segments in the order it got them, one per line: `TRIAL_ID START END ACCURACY`.

Usage: python_pbt_worker.py STUBS_DIR ADDRESS TOKEN
"""

import hashlib
import json
import math
import sys
import time
import tomllib

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import sweep_pb2 as pb  # noqa: E402
import sweep_pb2_grpc as rpc  # noqa: E402

address, token = sys.argv[2], sys.argv[3]
auth = [("authorization", "Bearer " + token)]
stub = rpc.CoordinatorStub(grpc.insecure_channel(address))


def lr_at(spec, epoch):
    """The rate of epoch `epoch` (1-based): the trial's, then each change's from its epoch."""
    lr = spec["lr"]
    for change in spec.get("changes", []):
        if change["epoch"] <= epoch and "lr" in change:
            lr = change["lr"]
    return lr


def accuracy(w):
    return 0.1 + 0.8 * (1.0 - math.exp(-w))


def metrics(epoch, lr, acc):
    return {"epoch": epoch, "lr": lr, "acc": acc}


def epoch_pb(m):
    return pb.EpochMetrics(epoch=m["epoch"], train_loss=1.0, train_accuracy=m["acc"], val_loss=1.0,
                           val_accuracy=m["acc"], lr=m["lr"], seconds=0.1, images_per_sec=10.0)


reg = stub.Register(pb.RegisterRequest(name="py-pbt", device=pb.DEVICE_KIND_CPU, slots=1), metadata=auth)
seen = []
idle = 0
while idle < 25:
    leases = stub.Lease(pb.LeaseRequest(worker_id=reg.worker_id, free_slots=1), metadata=auth).leases
    if not leases:
        idle += 1
        time.sleep(0.2)
        continue
    idle = 0
    lease = leases[0]
    spec = tomllib.loads(lease.spec_toml)
    ref = pb.LeaseRef(trial_id=lease.trial_id, attempt=lease.attempt)
    w, done = 0.0, []
    if lease.checkpoint_epoch > 0:
        chunks = stub.LoadCheckpoint(pb.LoadCheckpointRequest(worker_id=reg.worker_id, lease=ref), metadata=auth)
        blob = b"".join(c.data for c in chunks)
        state = json.loads(blob)
        w, done = state["w"], state["epochs"]
        assert len(done) == lease.checkpoint_epoch, (len(done), lease.checkpoint_epoch)
    last = spec.get("stop_after", spec["epochs"])
    for epoch in range(len(done) + 1, last + 1):
        lr = lr_at(spec, epoch)
        w += max(0.0, 0.5 - 0.2 * (math.log10(lr) + 2.0) ** 2)
        done.append(metrics(epoch, lr, accuracy(w)))
    acc = done[-1]["acc"]
    if last < spec["epochs"]:
        blob = json.dumps({"w": w, "epochs": done}).encode()
        first = pb.CheckpointChunk(data=blob, worker_id=reg.worker_id, lease=ref, epoch=last, size=len(blob),
                                   sha256=hashlib.sha256(blob).hexdigest(), kind=pb.ARTIFACT_KIND_CHECKPOINT)
        ack = stub.SaveCheckpoint(iter([first]), metadata=auth)
        if not ack.accepted:
            sys.exit(f"python PBT check: checkpoint of {lease.trial_id} refused: {ack.reason}")
    test = pb.TestMetrics(loss=1.0, accuracy=acc, per_class_accuracy=[acc] * 10,
                          confusion=[1 if i % 11 == 0 else 0 for i in range(100)], images=10)
    status = pb.TRIAL_STATUS_STOPPED if last < spec["epochs"] else pb.TRIAL_STATUS_COMPLETED
    result = pb.TrialResult(status=status, epochs=[epoch_pb(m) for m in done], test=test, best_val_accuracy=acc,
                            train_images=10, val_images=10, parameters=1, device="cpu", seconds=0.1,
                            reason=f"stop_after = {last}" if status == pb.TRIAL_STATUS_STOPPED else None,
                            notes=["python PBT check: a stand-in result, nothing was trained"])
    reply = stub.ReportResult(pb.ResultReport(worker_id=reg.worker_id, lease=ref, result=result), metadata=auth)
    if not reply.accepted:
        sys.exit(f"python PBT check: result for {lease.trial_id} refused: {reply.reason}")
    seen.append((lease.trial_id, lease.checkpoint_epoch, last, f"{acc:.6f}"))
for row in seen:
    print(*row)
