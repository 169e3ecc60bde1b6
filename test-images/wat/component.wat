;; A WASI 0.2 command component without a toolchain: `wasi:cli/run` exits
;; 42 through `exit-with-code`, and top-level functions for
;; `component.wasm#func`: `hello` returns, `boom` traps, `spin` loops until
;; a signal interrupts it.
(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit_with_code (canon lower (func $exit "exit-with-code")))
  (core module $m
    (import "cli" "exit-with-code" (func $exit (param i32)))
    ;; run: exit 42, as a program that calls exit(42).
    (func (export "run") (result i32)
      (call $exit (i32.const 42))
      (i32.const 0))
    (func (export "hello"))
    (func (export "boom") unreachable)
    (func (export "spin") (loop $forever (br $forever))))
  (core instance $cli (export "exit-with-code" (func $exit_with_code)))
  (core instance $i (instantiate $m (with "cli" (instance $cli))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run_instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run_instance))
  (func (export "hello") (canon lift (core func $i "hello")))
  (func (export "boom") (canon lift (core func $i "boom")))
  (func (export "spin") (canon lift (core func $i "spin"))))
