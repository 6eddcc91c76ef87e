from deadpixel.cli import main

main(prog_name="deadpixel")
