! 2-D heat diffusion in Fortran with MPI, coupled to doreisa through its Fortran module.
!
! The same simulation as examples/heat/simulation.py and examples/heat_c/heat.c, step for step:
! each rank owns a block of a size x size grid (MPI_Dims_create splits it, unevenly if needed)
! with one ghost cell on each side, publishes the interior of its block (no copy: the section
! u(1:nx, 1:ny) goes to doreisa as it lies in memory), exchanges halos, updates. The contract
! decides which steps are copied; the others cost a call.
!
! u(0:nx+1, 0:ny+1) has x first: in memory it is the (y, x) array of the C and Python versions,
! the contract's temperature with dims [y, x]; its offset is given in Fortran order, [x0, y0].
! The Cartesian dimensions are MPI's, as in C: the first one splits y, the second x.
!
!   make -C examples/heat_fortran
!   doreisa run examples/heat/contract.yaml --np 4 --output out/heat_fortran \
!       --analytics examples/heat/analytics.py -- examples/heat_fortran/heat --steps 200
program heat
    use, intrinsic :: iso_fortran_env, only: real64, error_unit
    use mpi
    use doreisa
    implicit none

    integer, parameter :: dp = real64
    real(dp), parameter :: AMBIENT = 300.0_dp  ! K, fixed boundary temperature
    real(dp), parameter :: ALPHA = 1.0_dp

    integer :: grid, steps, source_on, source_off
    real(dp) :: spot, source_rate
    integer :: nranks, rank, dims(2), coords(2), cart, ierr, status
    integer :: y0, ny, x0, nx, i, j, step
    real(dp), allocatable :: u(:, :), lap(:, :), source(:, :), send(:), recv(:)
    real(dp) :: cy, cx, width, sw, x, y, sx, sy, dt, time, k, heat_rate
    logical :: on, coupled
    type(doreisa_bridge) :: bridge
    type(doreisa_counts) :: counts

    call MPI_Init(ierr)
    if (.not. parse()) then
        call MPI_Finalize(ierr)
        stop 2
    end if
    call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)
    dims = 0
    call MPI_Dims_create(nranks, 2, dims, ierr)
    call MPI_Cart_create(MPI_COMM_WORLD, 2, dims, [.false., .false.], .false., cart, ierr)
    call MPI_Comm_rank(cart, rank, ierr)
    call MPI_Cart_coords(cart, rank, 2, coords, ierr)
    call split(grid, dims(1), coords(1), y0, ny)
    call split(grid, dims(2), coords(2), x0, nx)

    allocate (u(0:nx + 1, 0:ny + 1), lap(nx, ny), source(nx, ny), send(max(nx, ny)), recv(max(nx, ny)))
    cy = 0.4_dp * grid
    cx = 0.6_dp * grid
    width = 0.08_dp * grid
    sw = 0.04_dp * grid
    u = AMBIENT
    do i = 1, ny
        do j = 1, nx
            y = y0 + i - 1
            x = x0 + j - 1
            u(j, i) = AMBIENT + spot * exp(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / (2 * (width * width)))
            sy = y - 0.7_dp * grid
            sx = x - 0.3_dp * grid
            source(j, i) = exp(-(sy * sy + sx * sx) / (2 * (sw * sw)))
        end do
    end do
    dt = 0.2_dp / ALPHA
    time = 0

    call doreisa_init(bridge, cart, status)
    coupled = status == DOREISA_OK
    if (.not. coupled .and. rank == 0) &
        write (error_unit, '(a)') 'heat: running without analytics: ' // doreisa_last_error()
    do step = 0, steps - 1
        if (coupled) then
            call doreisa_publish(bridge, 'temperature', u(1:nx, 1:ny), step, offset=[x0, y0], time=time, ierr=status)
            if (status /= DOREISA_OK) then
                write (error_unit, '(a, i0, 2a)') 'heat: rank ', rank, ': ', doreisa_last_error()
                call MPI_Abort(cart, 1, ierr)
            end if
        end if
        call exchange_halos()
        do i = 1, ny
            do j = 1, nx  ! the order of heat.c's sum: up, down, left, right
                lap(j, i) = (((u(j, i - 1) + u(j, i + 1)) + u(j - 1, i)) + u(j + 1, i)) - 4 * u(j, i)
            end do
        end do
        k = ALPHA * dt
        heat_rate = dt * source_rate
        on = source_on <= step .and. step < source_off
        do i = 1, ny
            do j = 1, nx
                u(j, i) = u(j, i) + k * lap(j, i)
                if (on) u(j, i) = u(j, i) + heat_rate * source(j, i)
            end do
        end do
        time = time + dt
    end do
    if (coupled) then
        call doreisa_close(bridge, counts, status)
        if (status /= DOREISA_OK) write (error_unit, '(a, i0, 2a)') 'heat: rank ', rank, ': close: ', doreisa_last_error()
    end if
    if (rank == 0) print '(a, i0, a, i0, a)', 'simulation done: ', steps, ' steps; rank 0 copied ', counts%published, &
        ' blocks'
    call MPI_Comm_free(cart, ierr)
    call MPI_Finalize(ierr)

contains

    ! Start (0-based) and length of part `index` of n cells cut into `parts` nearly equal parts.
    subroutine split(n, parts, index, start, length)
        integer, intent(in) :: n, parts, index
        integer, intent(out) :: start, length
        integer :: base, extra

        base = n / parts
        extra = mod(n, parts)
        start = index * base + min(index, extra)
        length = base
        if (index < extra) length = base + 1
    end subroutine split

    ! --size N --steps N --spot K --source START:STOP --source-rate K/time, as heat.c reads them.
    logical function parse()
        character(len=256) :: arg, value
        integer :: n, colon, ios

        grid = 256
        steps = 200
        spot = 150
        source_on = -1
        source_off = -1
        source_rate = 10
        parse = .false.
        n = 1
        do while (n <= command_argument_count())
            call get_command_argument(n, arg)
            if (n + 1 > command_argument_count()) then
                write (error_unit, '(3a)') 'heat: ', trim(arg), ' needs a value'
                return
            end if
            call get_command_argument(n + 1, value)
            select case (arg)
            case ('--size')
                read (value, *, iostat=ios) grid
            case ('--steps')
                read (value, *, iostat=ios) steps
            case ('--spot')
                read (value, *, iostat=ios) spot
            case ('--source-rate')
                read (value, *, iostat=ios) source_rate
            case ('--source')
                colon = index(value, ':')
                ios = 1
                if (colon > 1) read (value(:colon - 1), *, iostat=ios) source_on
                if (ios == 0) read (value(colon + 1:), *, iostat=ios) source_off
                if (ios /= 0) then
                    write (error_unit, '(2a)') 'heat: --source wants START:STOP, not ', trim(value)
                    return
                end if
            case default
                write (error_unit, '(2a)') 'heat: unknown option ', trim(arg)
                return
            end select
            if (ios /= 0) then
                write (error_unit, '(4a)') 'heat: bad value for ', trim(arg), ': ', trim(value)
                return
            end if
            n = n + 2
        end do
        parse = .true.
    end function parse

    ! Fill the ghost cells from the neighbours; the outer boundary stays at AMBIENT. Axis 0 of
    ! the Cartesian communicator is y (the second index of u), axis 1 is x.
    subroutine exchange_halos()
        integer :: low, high

        call MPI_Cart_shift(cart, 0, 1, low, high, ierr)  ! y: rows u(1:nx, i)
        send(1:nx) = u(1:nx, ny)  ! the last interior row goes up, the first down
        call MPI_Sendrecv(send, nx, MPI_DOUBLE_PRECISION, high, 0, recv, nx, MPI_DOUBLE_PRECISION, low, 0, cart, &
                          MPI_STATUS_IGNORE, ierr)
        if (low /= MPI_PROC_NULL) u(1:nx, 0) = recv(1:nx)
        send(1:nx) = u(1:nx, 1)
        call MPI_Sendrecv(send, nx, MPI_DOUBLE_PRECISION, low, 0, recv, nx, MPI_DOUBLE_PRECISION, high, 0, cart, &
                          MPI_STATUS_IGNORE, ierr)
        if (high /= MPI_PROC_NULL) u(1:nx, ny + 1) = recv(1:nx)

        call MPI_Cart_shift(cart, 1, 1, low, high, ierr)  ! x: columns u(j, 1:ny)
        send(1:ny) = u(nx, 1:ny)
        call MPI_Sendrecv(send, ny, MPI_DOUBLE_PRECISION, high, 0, recv, ny, MPI_DOUBLE_PRECISION, low, 0, cart, &
                          MPI_STATUS_IGNORE, ierr)
        if (low /= MPI_PROC_NULL) u(0, 1:ny) = recv(1:ny)
        send(1:ny) = u(1, 1:ny)
        call MPI_Sendrecv(send, ny, MPI_DOUBLE_PRECISION, low, 0, recv, ny, MPI_DOUBLE_PRECISION, high, 0, cart, &
                          MPI_STATUS_IGNORE, ierr)
        if (high /= MPI_PROC_NULL) u(nx + 1, 1:ny) = recv(1:ny)
    end subroutine exchange_halos

end program heat
