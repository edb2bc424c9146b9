# The filter_text parser (node/filter_text.c): grammar, mapping to quiver.v1.Filter, limits,
# error offsets, allocation failures and random input.
qv_add_criterion_test(node_filter_text SOURCES test_filter_text.c LIBS qv_filter_text)
# Allocation failures are injected by wrapping malloc/calloc/realloc at link time (GNU ld, lld).
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  target_compile_definitions(test_node_filter_text PRIVATE QV_TEST_WRAP_MALLOC=1)
  target_link_options(test_node_filter_text PRIVATE
                      -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc)
endif()
