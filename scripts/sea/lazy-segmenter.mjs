// Bundled in place of Intl.Segmenter (esbuild inject + define, see scripts/build.mjs). string-width,
// which yargs uses for help layout, creates a segmenter at module load, and creating an ICU segmenter
// cost every command line that goes through yargs about 19 ms (two copies of string-width, measured);
// this one creates it on first use, and string-width never uses it for ASCII text.
const { Segmenter } = Intl;

export class LazySegmenter {
  #args;
  #segmenter;

  constructor(...args) {
    this.#args = args;
  }

  #real() {
    return (this.#segmenter ??= new Segmenter(...this.#args));
  }

  segment(input) {
    return this.#real().segment(input);
  }

  resolvedOptions() {
    return this.#real().resolvedOptions();
  }

  static supportedLocalesOf(...args) {
    return Segmenter.supportedLocalesOf(...args);
  }
}
