;; A well-formed WASI preview 1 module that is not a command: it exports memory and a
;; function called `main` but no `_start`. Tests use it to check that the shim reports the
;; missing entry point instead of running something else. `main` prints a line so that a
;; shim that wrongly falls back to it gives itself away.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Bytes 0..8 hold the iovec and 8..12 the written count; the message lives at 64.
  (data (i32.const 64) "nostart main ran\n")

  (func $main (export "main")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
