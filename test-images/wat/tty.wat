;; Says whether its stdout is a terminal, as WASI preview 1 tells it: fd_fdstat_get on fd 1
;; reports filetype 2 (character_device) for a terminal. Prints "stdout is a terminal" or
;; "stdout is not a terminal (filetype <n>)" and exits 0; a failing call traps.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get"
    (func $fd_fdstat_get (param i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Bytes 0..8 hold the iovec, 8..12 the written count, 16..40 the fdstat; messages from 64.
  (data (i32.const 64) "stdout is a terminal\n")
  (data (i32.const 128) "stdout is not a terminal (filetype 0)\n")

  (func $print (param $at i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $main (export "_start")
    (local $filetype i32)
    (if (call $fd_fdstat_get (i32.const 1) (i32.const 16))
      (then unreachable))
    (local.set $filetype (i32.load8_u (i32.const 16)))
    (if (i32.eq (local.get $filetype) (i32.const 2))
      (then (call $print (i32.const 64) (i32.const 21)))
      (else
        ;; The digit of the filetype (0 to 7) goes where the message holds "0".
        (i32.store8 (i32.const 163) (i32.add (i32.const 48) (local.get $filetype)))
        (call $print (i32.const 128) (i32.const 38))))))
