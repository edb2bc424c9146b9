# The node process and its data directory: SIGKILL during concurrent ingest (acknowledged points
# survive, byte for byte), recovery from damaged or missing index snapshots and from the log,
# drop, and the data-directory lock. Both start and kill sanitizer-built nodes many times over:
# one at a time.
if(TARGET qv_proto_python)
  add_test(NAME node_crash
    COMMAND ${QV_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_crash.py
            --node $<TARGET_FILE:quiver-node> --python-dir ${QV_PROTO_PY_DIR} -v)
  add_test(NAME node_recovery
    COMMAND ${QV_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_recovery.py
            --node $<TARGET_FILE:quiver-node> --python-dir ${QV_PROTO_PY_DIR} -v)
  set_tests_properties(node_crash node_recovery PROPERTIES TIMEOUT 400
                       RESOURCE_LOCK node_processes)
else()
  message(WARNING "grpc_python_plugin not found: the node crash and recovery tests are not built")
endif()
