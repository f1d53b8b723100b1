"""A worker written from proto/proto/sweep.proto alone drives a TPE sweep to its end.

It trains nothing: each trial's test accuracy is a known function of its learning rate and
optimiser (best at lr = 0.01 with SGD), so the search has something to learn. It leases one
trial at a time, reports the result, and stops once the coordinator has nothing left to
lease; then it prints the trials in the order it got them, one per line, as
`TRIAL_ID LR OPTIMIZER ACCURACY`.

Usage: python_tpe_worker.py STUBS_DIR ADDRESS TOKEN
"""

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


def accuracy(spec):
    """Best (0.9) at lr = 0.01 with SGD; Adam is 0.1 lower."""
    acc = 0.9 - 0.15 * (math.log10(spec["lr"]) + 2.0) ** 2
    if spec["optimizer"] != "sgd":
        acc -= 0.1
    return min(0.95, max(0.05, acc))


reg = stub.Register(pb.RegisterRequest(name="py-tpe", device=pb.DEVICE_KIND_CPU, slots=1), metadata=auth)
seen = []
idle = 0
while idle < 10:
    leases = stub.Lease(pb.LeaseRequest(worker_id=reg.worker_id, free_slots=1), metadata=auth).leases
    if not leases:
        idle += 1
        time.sleep(0.2)
        continue
    idle = 0
    lease = leases[0]
    spec = tomllib.loads(lease.spec_toml)
    acc = accuracy(spec)
    ref = pb.LeaseRef(trial_id=lease.trial_id, attempt=lease.attempt)
    epoch = pb.EpochMetrics(epoch=1, train_loss=1.0, train_accuracy=acc, lr=spec["lr"], seconds=0.1, images_per_sec=10.0)
    test = pb.TestMetrics(loss=1.0, accuracy=acc, per_class_accuracy=[acc] * 10,
                          confusion=[1 if i % 11 == 0 else 0 for i in range(100)], images=10)
    result = pb.TrialResult(status=pb.TRIAL_STATUS_COMPLETED, epochs=[epoch], test=test, best_val_accuracy=acc,
                            train_images=10, parameters=1, device="cpu", seconds=0.1,
                            notes=["python TPE check: a stand-in result, nothing was trained"])
    reply = stub.ReportResult(pb.ResultReport(worker_id=reg.worker_id, lease=ref, result=result), metadata=auth)
    if not reply.accepted:
        sys.exit(f"python TPE check: result for {lease.trial_id} refused: {reply.reason}")
    seen.append((lease.trial_id, spec["lr"], spec["optimizer"], acc))
for row in seen:
    print(*row)
