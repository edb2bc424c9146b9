# The public data API of a node (quiver.v1.Collections and quiver.v1.Points): bad input against a
# live node, functional checks against plain-Python ground truth, and the payload index / filter
# compiler (node/payload.c) with its hash map (node/hmap.c) in-process.
if(TARGET qv_proto_python)
  add_test(NAME node_bad_input
    COMMAND ${QV_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_bad_input.py
            --node $<TARGET_FILE:quiver-node> --python-dir ${QV_PROTO_PY_DIR})
  add_test(NAME node_points_api
    COMMAND ${QV_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_points_api.py
            --node $<TARGET_FILE:quiver-node> --python-dir ${QV_PROTO_PY_DIR})
  set_tests_properties(node_bad_input node_points_api PROPERTIES TIMEOUT 300)
else()
  message(WARNING "grpc_python_plugin not found: the node API Python tests are not built")
endif()
qv_add_criterion_test(node_payload SOURCES test_payload.c LIBS qv_node TIMEOUT 300)
