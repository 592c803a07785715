/**
 * Caffe's "step" learning-rate policy, counted in epochs rather than iterations so that it means
 * the same thing whatever the batch size and the size of the split.
 */
export interface StepSchedule {
  /** Multiply the rate by gamma every stepEpochs epochs. */
  stepEpochs: number;
  gamma: number;
}

/** The learning rate for a 0-based epoch: base * gamma^floor(epoch / stepEpochs). */
export function learningRateAt(epoch: number, base: number, schedule: StepSchedule): number {
  if (!(schedule.stepEpochs > 0)) throw new Error(`schedule.stepEpochs must be > 0, got ${schedule.stepEpochs}`);
  return base * schedule.gamma ** Math.floor(epoch / schedule.stepEpochs);
}

/** The 0-based epoch at which the last learning-rate phase of a `maxEpochs` budget begins. */
export function lastPhaseStart(maxEpochs: number, schedule: StepSchedule): number {
  if (!(schedule.stepEpochs > 0)) throw new Error(`schedule.stepEpochs must be > 0, got ${schedule.stepEpochs}`);
  // gamma 1 keeps one rate throughout: the whole budget is one phase.
  if (schedule.gamma === 1) return 0;
  return Math.floor((maxEpochs - 1) / schedule.stepEpochs) * schedule.stepEpochs;
}
