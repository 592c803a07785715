import { expect, it } from 'vitest';
import { describeBusContract, sleep, waitFor } from './bus.contract.ts';
import { createInProcessBus } from './in-process-bus.ts';

describeBusContract('in-process', async () => createInProcessBus());

it('runs a handler after publish returns, never inside it', async () => {
  const bus = createInProcessBus();
  const order: string[] = [];
  await bus.subscribe('transferlab.order.>', () => void order.push('handler'));
  const published = bus.publish('transferlab.order.a', {});
  order.push('publish returned');
  await published;
  await waitFor(() => order.length === 2, 'the handler');
  expect(order).toEqual(['publish returned', 'handler']);
  await bus.close();
});

it('forgets events older than the stream max age', async () => {
  const bus = createInProcessBus({ eventsMaxAgeMs: 30 });
  await bus.publish('transferlab.age.a', { n: 1 });
  await sleep(60);
  await bus.publish('transferlab.age.a', { n: 2 });
  const got: number[] = [];
  await bus.subscribe('transferlab.age.>', (msg) => void got.push(msg.json<{ n: number }>().n), { deliver: 'all' });
  await waitFor(() => got.length === 1, 'the recent event');
  await sleep(20);
  expect(got).toEqual([2]);
  await bus.close();
});

it('reports a message given up after maxDeliver failures', async () => {
  const warnings: Array<Record<string, unknown>> = [];
  const bus = createInProcessBus({ logger: { warn: (fields) => void warnings.push(fields) } });
  await bus.subscribe(
    'transferlab.doomed.>',
    () => {
      throw new Error('always');
    },
    { maxDeliver: 2, retryDelayMs: 0 },
  );
  await bus.publish('transferlab.doomed.a', { job: 1 });
  await waitFor(() => warnings.length === 1, 'the warning');
  expect(warnings[0]).toMatchObject({ subject: 'transferlab.doomed.a', deliveries: 2 });
  await bus.close();
});
