// jstat ships no types; this declares the one corner of it we use.
declare module 'jstat' {
  const jStat: {
    studentt: {
      inv(p: number, dof: number): number;
      cdf(x: number, dof: number): number;
    };
  };
  export default jStat;
}
