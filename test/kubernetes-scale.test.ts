// The controller at scale on the real control plane, small enough for every test run: a sweep of
// 120 cells on 5 kwok nodes with 8 GPUs each (test/support/kube-scale.ts; kwok completes the
// pods, nothing trains). The 1,020-cell figures in docs/operations.md ("Scale of the controller") come from
// scripts/kube-scale.ts, the same run made bigger.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlPlane, controlPlane } from './support/kube-control-plane.ts';
import { runScale } from './support/kube-scale.ts';

let plane: ControlPlane;
beforeAll(async () => {
  plane = await controlPlane();
}, 95 * 60_000);
afterAll(async () => {
  await plane?.stop();
});

describe('a sweep of 120 cells on 40 simulated GPUs (kwok)', () => {
  it('finishes every cell, with a bounded number of API calls per cell', async () => {
    const result = await runScale({
      admin: plane.admin,
      auditLog: plane.auditLog,
      nodes: 5,
      gpusPerNode: 8,
      repeats: 4,
    });
    console.log(`scale: ${JSON.stringify(result)}`);
    expect(result.cells).toBe(120);
    expect(result.state).toBe('succeeded');
    // Per cell: one list to find an earlier Job, one create; the watches are shared by all cells.
    expect(result.apiCallsPerCell).toBeLessThan(3);
  }, 600_000);
});
