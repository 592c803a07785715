// fast-check arbitraries for sweep specs: near-valid specs with hostile values in every field,
// as objects and as the YAML or JSON text a user (or an attacker) sends.
import fc from 'fast-check';
import { stringify } from 'yaml';
import { ALL_ARMS } from '@transferlab/experiment';

const hostileString = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('', ' ', '../../../etc/passwd', '/etc/passwd', '/root', '\0', '${x}', 'x'.repeat(5000)),
  },
);
const anything = fc.anything({ maxDepth: 2, maxKeys: 3 });

/** Valid values only, or valid values with hostile ones mixed in (one in `odds`). */
function mix<T>(hostile: boolean, valid: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown>, odds = 6): fc.Arbitrary<unknown> {
  return hostile ? fc.oneof({ weight: odds, arbitrary: valid }, { weight: 1, arbitrary: bad }) : valid;
}

function specValue(hostile: boolean): fc.Arbitrary<Record<string, unknown>> {
  const path = mix(
    hostile,
    fc.constantFrom('data/train', 'data/labels'),
    fc.oneof(fc.constantFrom('../../../etc', '/etc/passwd', '/root', 'a/../../b', '', 'x'.repeat(3000)), hostileString),
  );
  const count = (max: number) =>
    mix(
      hostile,
      fc.integer({ min: 1, max }),
      fc.constantFrom(0, -1, 1.5, 2 ** 31, 2 ** 53, 1e6, Number.NaN, Infinity, '7', null),
    );
  const rate = mix(
    hostile,
    fc.double({ min: 0.001, max: 0.5, noNaN: true }),
    fc.constantFrom(-1, 0, Number.NaN, Infinity, 1e300, '0.1'),
  );
  const dataset = fc.oneof(
    { weight: 5, arbitrary: fc.constant({ kind: 'mnist' }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('idx'), trainImages: path, trainLabels: path }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('cifar10'), path }) },
    {
      weight: 1,
      arbitrary: fc.record(
        { kind: fc.constant('image-folder'), path, imageSize: fc.tuple(count(64), count(64)) },
        { requiredKeys: ['kind', 'path'] },
      ),
    },
    ...(hostile
      ? [
          { weight: 1, arbitrary: fc.record({ kind: hostileString }) },
          { weight: 1, arbitrary: anything },
        ]
      : []),
  );
  const split = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record(
        { kind: fc.constant('random'), trainPerClass: count(50), valPerClass: count(10), testPerClass: count(10) },
        { requiredKeys: ['kind'] },
      ),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('groups'),
        groups: fc.record({
          A: fc.uniqueArray(mix(hostile, fc.constantFrom('0', '1', '2'), hostileString), {
            minLength: 1,
            maxLength: 3,
          }),
          B: fc.uniqueArray(mix(hostile, fc.constantFrom('5', '6', '7'), hostileString), {
            minLength: 1,
            maxLength: 3,
          }),
        }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('groups'), groupsFile: path }) },
    ...(hostile ? [{ weight: 1, arbitrary: anything }] : []),
  );
  const training = fc.record(
    {
      batchSize: count(64),
      learningRate: rate,
      maxEpochs: count(5),
      augment: mix(hostile, fc.boolean(), anything),
      schedule: fc.record({ stepEpochs: count(10), gamma: rate }),
    },
    { requiredKeys: [] },
  );
  return fc
    .tuple(
      fc.record(
        {
          name: mix(hostile, fc.constantFrom('fuzz', 'a-b-1'), hostileString),
          dataset,
          split,
          net: fc.record(
            {
              kind: mix(hostile, fc.constantFrom('small', 'caffenet'), hostileString),
              width: mix(hostile, fc.constantFrom(0.25, 0.5, 1), fc.constantFrom(0, -1, 1e9, Number.NaN)),
            },
            { requiredKeys: ['kind'] },
          ),
          training,
          base: training,
          layers: mix(
            hostile,
            fc.uniqueArray(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 7 }),
            fc.array(fc.oneof(fc.integer({ min: -3, max: 12 }), anything), { maxLength: 9 }),
          ),
          arms: mix(
            hostile,
            fc.uniqueArray(fc.constantFrom(...ALL_ARMS), { minLength: 1, maxLength: ALL_ARMS.length }),
            fc.array(fc.oneof(fc.constantFrom(...ALL_ARMS), hostileString), { maxLength: 6 }),
          ),
          repeats: mix(
            hostile,
            fc.integer({ min: 1, max: 3 }),
            fc.constantFrom(0, -1, 1.5, 50, 100, 101, 1_000_000, 2 ** 53, Infinity, '2'),
            3,
          ),
          concurrency: mix(hostile, fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant('auto')), hostileString),
        },
        { requiredKeys: ['name', 'dataset'] },
      ),
      hostile ? fc.option(fc.dictionary(hostileString, anything, { maxKeys: 2 }), { freq: 8 }) : fc.constant(null),
    )
    .map(([spec, extra]) => (extra ? { ...extra, ...spec } : spec) as Record<string, unknown>);
}

/** A spec as a value: valid (in any of its shapes), or with hostile values mixed into any field. */
export const specObject = fc.oneof(specValue(false), specValue(true));

/** YAML that expands its aliases a billion times. */
export function billionLaughs(): string {
  const levels = ['a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
  for (let i = 1; i < 9; i++) {
    const previous = String.fromCharCode(96 + i);
    const name = String.fromCharCode(97 + i);
    levels.push(`${name}: &${name} [${Array(10).fill(`*${previous}`).join(', ')}]`);
  }
  return `name: lol\ndataset: { kind: mnist }\n${levels.join('\n')}\n`;
}

/** A spec as text: YAML or JSON of a spec value, that text damaged, an alias bomb, or noise. */
export const specText = fc.oneof(
  { weight: 6, arbitrary: specObject.map((spec) => stringify(spec)) },
  { weight: 2, arbitrary: specObject.map((spec) => JSON.stringify(spec)) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        specObject.map((spec) => stringify(spec)),
        fc.nat(),
        fc.nat({ max: 20 }),
        fc.string({ maxLength: 6 }),
      )
      .map(([text, at, cut, insert]) => {
        const i = at % (text.length + 1);
        return text.slice(0, i) + insert + text.slice(i + cut);
      }),
  },
  { weight: 1, arbitrary: fc.constant(billionLaughs()) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
);
