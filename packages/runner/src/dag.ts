/** A node of a dependency graph: a cell and the cells it needs first. */
export interface DagNode {
  id: string;
  deps: readonly string[];
}

export type NodeState = 'pending' | 'running' | 'succeeded' | 'failed' | 'blocked' | 'interrupted';

export interface DagOutcome {
  states: Map<string, NodeState>;
  errors: Map<string, Error>;
}

/**
 * Runs every node after its dependencies, at most `concurrency` at a time. A node whose
 * dependency failed is `blocked`, not run; `stop()` lets running nodes finish and starts no more.
 */
export async function runDag(
  nodes: readonly DagNode[],
  runNode: (id: string) => Promise<void>,
  options: { concurrency: number; isInterrupt?: (error: Error) => boolean; shouldStop?: () => boolean },
): Promise<DagOutcome> {
  const states = new Map<string, NodeState>(nodes.map((node) => [node.id, 'pending']));
  const errors = new Map<string, Error>();
  const byId = new Map(nodes.map((node) => [node.id, node]));
  for (const node of nodes) {
    for (const dep of node.deps) {
      if (!byId.has(dep)) throw new Error(`node ${node.id} depends on unknown node ${dep}`);
    }
  }
  const running = new Set<Promise<void>>();

  const refreshBlocked = (): void => {
    let changed = true;
    while (changed) {
      changed = false;
      for (const node of nodes) {
        if (states.get(node.id) !== 'pending') continue;
        const bad = node.deps.some((dep) => ['failed', 'blocked', 'interrupted'].includes(states.get(dep) ?? ''));
        if (bad) {
          states.set(node.id, 'blocked');
          changed = true;
        }
      }
    }
  };
  const ready = (): DagNode[] =>
    nodes.filter(
      (node) => states.get(node.id) === 'pending' && node.deps.every((dep) => states.get(dep) === 'succeeded'),
    );

  for (;;) {
    refreshBlocked();
    const stopping = options.shouldStop?.() ?? false;
    if (!stopping) {
      for (const node of ready()) {
        if (running.size >= options.concurrency) break;
        states.set(node.id, 'running');
        const task = runNode(node.id).then(
          () => {
            states.set(node.id, 'succeeded');
          },
          (error: unknown) => {
            const err = error instanceof Error ? error : new Error(String(error));
            states.set(node.id, options.isInterrupt?.(err) ? 'interrupted' : 'failed');
            errors.set(node.id, err);
          },
        );
        const tracked: Promise<void> = task.finally(() => running.delete(tracked));
        running.add(tracked);
      }
    }
    if (running.size === 0) break;
    await Promise.race(running);
  }
  return { states, errors };
}
