import { describe, expect, it } from 'vitest';
import { Tally, lineProgress } from './progress.ts';

describe('the sweep ETA', () => {
  it('counts only the epochs trained since the process began: reused and resumed work is no rate', () => {
    let now = 0;
    const lines: string[] = [];
    const progress = lineProgress({ cells: 10, totalEpochs: 100, write: (line) => lines.push(line), now: () => now });
    // Half the sweep was finished by an earlier run: reused in no time.
    for (let i = 0; i < 5; i += 1) {
      progress.cellStarted(`r${i}`, `reused ${i}`, 10);
      progress.cellFinished(`r${i}`, 'reused');
    }
    // One cell resumes from a checkpoint 5 epochs in, then trains one epoch in 10 s.
    progress.cellStarted('c', 'resumed', 10);
    progress.cellResumed('c', 5);
    now = 10_000;
    progress.cellProgress('c', { phase: 'training', epoch: 6, maxEpochs: 10, epochDone: true });
    // 44 epochs of budget are left (100 - 50 reused - 6 of the resumed cell), at 10 s each.
    expect(lines.at(-1)).toMatch(/sweep ETA 440s$/);
  });

  it('with nothing reused or resumed, is elapsed time over work done times work left', () => {
    const tally = new Tally(20);
    tally.start('a', 'a', 10);
    tally.advance('a', 4);
    expect(tally.etaSeconds(0, 8_000)).toBeCloseTo((8 / 4) * 16);
    tally.finish('a', 'succeeded');
    expect(tally.prior()).toBe(0);
    expect(tally.value()).toBe(10);
  });

  it('has no ETA before any epoch was trained here, and an interrupted cell gives its budget back', () => {
    const tally = new Tally(20);
    tally.start('a', 'a', 10);
    tally.resume('a', 3);
    expect(tally.etaSeconds(0, 5_000)).toBeUndefined();
    tally.advance('a', 5);
    tally.finish('a', 'interrupted');
    expect(tally.value()).toBe(0);
    expect(tally.prior()).toBe(0);
  });
});
