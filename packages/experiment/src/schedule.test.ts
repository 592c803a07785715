import { expect, test } from 'vitest';
import { lastPhaseStart, learningRateAt } from './schedule.ts';

test('the step schedule multiplies by gamma every stepEpochs epochs', () => {
  const schedule = { stepEpochs: 3, gamma: 0.1 };
  expect([0, 1, 2, 3, 5, 6].map((epoch) => learningRateAt(epoch, 0.01, schedule))).toEqual([
    0.01,
    0.01,
    0.01,
    0.01 * 0.1,
    0.01 * 0.1,
    0.01 * 0.1 ** 2,
  ]);
  expect(() => learningRateAt(0, 0.01, { stepEpochs: 0, gamma: 0.1 })).toThrow(/stepEpochs/);
});

test('the last rate phase starts at the last step boundary inside the budget', () => {
  expect(lastPhaseStart(10, { stepEpochs: 4, gamma: 0.1 })).toBe(8);
  expect(lastPhaseStart(8, { stepEpochs: 4, gamma: 0.1 })).toBe(4);
  expect(lastPhaseStart(3, { stepEpochs: 4, gamma: 0.1 })).toBe(0);
  // gamma 1 never changes the rate: the whole budget is one phase.
  expect(lastPhaseStart(10, { stepEpochs: 4, gamma: 1 })).toBe(0);
  expect(() => lastPhaseStart(10, { stepEpochs: 0, gamma: 0.1 })).toThrow(/stepEpochs/);
});
