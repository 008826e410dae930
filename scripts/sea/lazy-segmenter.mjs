// Bundled in place of Intl.Segmenter (esbuild inject + define, see scripts/build.mjs). string-width,
// which yargs uses for help layout, creates a segmenter at module load, and V8 cannot put that
// ICU-backed object into the single binary's startup snapshot; this one creates it on first use.
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
