import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { type Cell, expandGrid, validateSpec } from '@transferlab/experiment';
import { LEARNED_LAYERS, buildNet } from '@transferlab/nn';
import { beforeAll, describe, expect, it } from 'vitest';
import { cellStreams } from './cell-seeds.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const plan = expandGrid(
  validateSpec({
    name: 's',
    dataset: { kind: 'mnist' },
    arms: ['baseA', 'baseB', 'BnB', 'AnB', 'AnB+', 'RnB', 'controlB'],
    layers: [3],
    repeats: 2,
  }),
);
const cell = (name: string): Cell => plan.cells.find((c) => c.name === name)!;

/** A cell's fresh net as the runner builds it, as bytes per learned layer. */
function freshLayers(c: Cell): Map<string, Buffer> {
  const streams = cellStreams(c);
  const model = buildNet(
    { kind: 'small', width: 0.25 },
    { inputShape: [12, 12, 1], numClasses: 5, seed: streams.init, dropoutSeed: streams.dropout },
  );
  const out = new Map(
    LEARNED_LAYERS.map((name) => [
      name,
      Buffer.from(new Float32Array(model.getLayer(name).getWeights()[0]!.dataSync()).buffer),
    ]),
  );
  model.dispose();
  return out;
}

describe('cellStreams', () => {
  it('gives every cell of a sweep its own init, dropout and data-order streams', () => {
    const all = plan.cells.map((c) => cellStreams(c));
    for (const key of ['init', 'dropout', 'order'] as const) {
      expect(new Set(all.map((s) => s[key])).size).toBe(plan.cells.length);
    }
    const one = cellStreams(cell('AnB n=3 seed=1'));
    expect(new Set([one.init, one.dropout, one.order]).size).toBe(3);
  });

  it('is a function of the repeat and the cell, not of anything else', () => {
    expect(cellStreams(cell('baseB seed=2'))).toEqual(cellStreams({ seed: 2, arm: 'baseB' }));
    // Another learning rate is another cell id, but the same starting weights.
    const other = expandGrid(
      validateSpec({ name: 's', dataset: { kind: 'mnist' }, arms: ['baseB'], training: { learningRate: 0.02 } }),
    ).cells[0]!;
    expect(other.id).not.toBe(cell('baseB seed=1').id);
    expect(cellStreams(other)).toEqual(cellStreams(cell('baseB seed=1')));
  });

  it("baseA and baseB start apart; a transfer cell's fresh layers are not its base net's initial ones", () => {
    const baseA = freshLayers(cell('baseA seed=1'));
    const baseB = freshLayers(cell('baseB seed=1'));
    const anb = freshLayers(cell('AnB n=3 seed=1'));
    const bnb = freshLayers(cell('BnB n=3 seed=1'));
    for (const name of LEARNED_LAYERS) {
      expect(baseA.get(name)!.equals(baseB.get(name)!)).toBe(false);
      // Layers 4..8 are the fresh ones of an n = 3 transfer cell.
      expect(anb.get(name)!.equals(baseA.get(name)!)).toBe(false);
      expect(anb.get(name)!.equals(bnb.get(name)!)).toBe(false);
    }
    // The same cell, built again: the same weights, bit for bit.
    const again = freshLayers(cell('AnB n=3 seed=1'));
    for (const name of LEARNED_LAYERS) expect(again.get(name)!.equals(anb.get(name)!)).toBe(true);
    // Another repeat of the same cell: other weights.
    const seed2 = freshLayers(cell('AnB n=3 seed=2'));
    expect(seed2.get('fc8')!.equals(anb.get('fc8')!)).toBe(false);
  });
});

describe('the CKA ceiling net', () => {
  it('baseB2 shares baseB’s split but none of its streams', () => {
    const measured = expandGrid(
      validateSpec({ name: 's', dataset: { kind: 'mnist' }, arms: ['baseA', 'baseB'], repeats: 1, measures: {} }),
    );
    const of = (arm: string): Cell => measured.cells.find((c) => c.arm === arm)!;
    expect(of('baseB2').splitId).toBe(of('baseB').splitId);
    const a = cellStreams(of('baseB'));
    const b = cellStreams(of('baseB2'));
    for (const stream of ['init', 'dropout', 'order'] as const) expect(b[stream]).not.toBe(a[stream]);
  });
});
