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
