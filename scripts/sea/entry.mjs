// The single binary's entry: the program, then the warm-up that runs only while its snapshot is built.
import '../../src/bin.ts';
import './warm-up.mjs';
