// The scale figures of docs/operations.md ("Scale of the controller"): a sweep of 1,020 cells (the default grid, 34 seeds)
// on 50 kwok nodes with 8 GPUs each, through SweepController + KubernetesExecutor against the
// real control plane. Prints cells per second and API calls per cell as JSON.
//
//   node --import tsx scripts/kube-scale.ts [NODES GPUS_PER_NODE REPEATS]
//
// Uses the control plane of TRANSFERLAB_KUBECONFIG / TRANSFERLAB_KUBE_AUDIT_LOG when set (as
// scripts/test.sh exports them), else starts one with scripts/kube-start.sh and stops it after.
import { controlPlane } from '../test/support/kube-control-plane.ts';
import { runScale } from '../test/support/kube-scale.ts';

const [nodes = 50, gpusPerNode = 8, repeats = 34] = process.argv.slice(2).map(Number);
const plane = await controlPlane();
try {
  const result = await runScale({ admin: plane.admin, auditLog: plane.auditLog, nodes, gpusPerNode, repeats });
  console.log(JSON.stringify({ nodes, gpusPerNode, ...result }, null, 2));
  if (result.state !== 'succeeded') process.exitCode = 1;
} finally {
  await plane.stop();
}
