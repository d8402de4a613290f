# Fails when README.md no longer shows engine/examples/embed.cc verbatim.
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/engine/examples/embed.cc example)
string(FIND "${readme}" "${example}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md's 'Embed the engine' example differs from engine/examples/embed.cc")
endif()
