;; Prints a line and then traps, so tests can check that a trap fails the task and that the
;; reported Wasm backtrace names the function that trapped ($explode).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "about to trap\n")

  ;; A separate named function, so the backtrace has a frame with a recognisable name.
  (func $explode
    unreachable)

  (func $main (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $explode)))
