# bash completion for hostagent (the daemon's command line)
_hostagent() {
    local cur prev
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "run check-config version --help" -- "$cur"))
        return
    fi
    case ${COMP_WORDS[1]} in
        run)
            if [ "$prev" = --config ] || [ "$prev" = -c ]; then
                COMPREPLY=($(compgen -f -- "$cur"))
            else
                COMPREPLY=($(compgen -W "--config --help" -- "$cur"))
            fi ;;
        check-config)
            COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
}
complete -F _hostagent hostagent
