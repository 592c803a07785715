// One cell step in its own process, on the backend TRANSFERLAB_BACKEND forces (the backend is
// chosen once per process, so backends-agree.test.ts needs one process per backend). Prints JSON.
//   run STORE CELL_ID       trains and evaluates the cell (runner's runCell)
//   evaluate STORE CELL_ID  scores the cell's final net, on whatever backend it was trained, on its test set
import type { Cell } from '@transferlab/experiment';
import { evaluate, loadModel, selectBackend } from '@transferlab/nn';
import { LocalFolderStore } from '@transferlab/platform';
import { cellKeys, getJson, loadSubsets, runCell } from '@transferlab/runner';

export interface CellOnBackend {
  backend: string;
  testTop1: number;
  valTop1History?: number[];
  /** The training loss of each step of the first epoch, in order. */
  stepLosses?: number[];
}

const [command, root, cellId] = process.argv.slice(2);
if ((command !== 'run' && command !== 'evaluate') || !root || !cellId) {
  throw new Error('usage: cell-on-backend.ts run|evaluate STORE_ROOT CELL_ID');
}
const store = new LocalFolderStore(root);
const cell = await getJson<Cell>(store, cellKeys.cell(cellId));
if (!cell) throw new Error(`no cell ${cellId} in ${store.describe(cellKeys.cell(cellId))}`);

let output: CellOnBackend;
if (command === 'run') {
  const stepLosses: number[] = [];
  const result = await runCell(store, cell, {
    progress: (p) => {
      if (p.phase === 'training' && p.epoch === 1 && !p.epochDone && p.loss !== undefined) stepLosses.push(p.loss);
    },
  });
  if (!result?.testTop1) throw new Error(`cell ${cell.name} finished without a test top-1`);
  output = {
    backend: result.backend ?? 'unrecorded',
    testTop1: result.testTop1,
    valTop1History: result.valTop1History,
    stepLosses,
  };
} else {
  const backend = await selectBackend();
  const [testSet] = await loadSubsets(store, cell, ['test']);
  const model = await loadModel(store, cellKeys.final(cell.id));
  const test = evaluate(model, { images: testSet!.pixels, labels: testSet!.labels, count: testSet!.count });
  output = { backend: backend.name, testTop1: test.top1 };
}
process.stdout.write(`${JSON.stringify(output)}\n`);
